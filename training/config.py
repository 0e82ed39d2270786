"""`TrainingConfig`: every knob of one training run, typed and validated, recorded verbatim in the manifest."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.constants import VERSION_PATTERN


class TrainingConfig(BaseModel):
    """One training run. Defaults are the committed model's settings (see models/manifest.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Data and labels
    data: str = Field(default="both", description="'sp500', 'nasdaq', 'both' (arch's daily data) or a CSV path.")
    csv_timezone: str | None = Field(
        default=None, description="IANA zone attached to naive CSV timestamps; None requires UTC offsets."
    )
    horizon: int = Field(default=5, ge=1, le=60, description="Label horizon in candles (days for arch data).")
    threshold_k: float = Field(
        default=0.4, gt=0, description="Buy/sell threshold as a multiple of window volatility x sqrt(horizon)."
    )
    train_fraction: float = Field(default=0.70, gt=0, lt=1, description="Share of calendar dates for training.")
    val_fraction: float = Field(default=0.15, gt=0, lt=1, description="Share of calendar dates for validation.")

    # Model
    hidden_size: int = Field(default=128, ge=2, description="LSTM hidden units (the product model uses 128).")
    num_layers: int = Field(default=2, ge=1, le=4, description="Stacked LSTM layers.")
    dropout: float = Field(default=0.2, ge=0, lt=1, description="Dropout between LSTM layers and in the head.")

    # Optimisation
    seed: int = Field(default=42, ge=0, description="Seeds python, numpy and torch; same data + seed = same model.")
    epochs: int = Field(default=20, ge=1, description="Upper bound on epochs; early stopping may end sooner.")
    batch_size: int = Field(default=128, ge=1, description="Windows per optimisation step.")
    optimizer: Literal["adamw", "sgd"] = Field(default="adamw", description="Optimiser.")
    lr: float = Field(default=1e-3, gt=0, description="Peak learning rate (after warm-up).")
    weight_decay: float = Field(default=1e-2, ge=0, description="Decoupled weight decay (AdamW) or L2 (SGD).")
    scheduler: Literal["cosine", "none"] = Field(default="cosine", description="Per-step learning-rate schedule.")
    warmup_epochs: int = Field(default=1, ge=0, description="Linear warm-up length in epochs; needs a scheduler.")
    grad_clip: float | None = Field(default=1.0, gt=0, description="Max global gradient norm; None disables.")
    patience: int = Field(default=5, ge=1, description="Epochs without validation-loss improvement before stopping.")
    use_class_weights: bool = Field(default=True, description="Weight the loss by inverse train class frequency.")
    num_threads: int = Field(default=2, ge=1, description="torch intra-op threads; part of what makes runs repeat.")
    progress: bool = Field(default=True, description="Show a tqdm progress bar.")

    # Export / evaluation
    opset: int = Field(default=17, ge=17, description="ONNX opset of the exported graphs.")
    latency_runs: int = Field(default=500, ge=1, description="Timed single-window runs per latency measurement.")

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainingConfig:
        if self.optimizer == "sgd" and self.lr < 0.01:
            raise ValueError(f"optimizer 'sgd' needs lr >= 0.01 to make progress in few epochs, got lr={self.lr}")
        if self.warmup_epochs > 0 and self.scheduler == "none":
            raise ValueError(
                f"warmup_epochs={self.warmup_epochs} needs a scheduler; set scheduler='cosine' or warmup_epochs=0"
            )
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be less than epochs ({self.epochs})")
        if self.train_fraction + self.val_fraction >= 1:
            raise ValueError(
                f"train_fraction + val_fraction must leave room for a test split, got "
                f"{self.train_fraction} + {self.val_fraction}"
            )
        if self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even (the head halves it), got {self.hidden_size}")
        return self

    @classmethod
    def recorded(cls, manifest: dict[str, Any]) -> TrainingConfig:
        """The config a version's manifest records (``training.config``), without progress bars: what re-checks,
        re-renders and fine-tunes rebuild its splits from."""
        return cls.model_validate({**manifest["training"]["config"], "progress": False})


class FinetuneOptions(BaseModel):
    """What `python -m training finetune` takes; everything else (labels, splits, optimiser, architecture) comes
    from the parent version's manifest, so the child is labelled and split exactly as the parent was."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = Field(description="CSV of the new market, in `train --data PATH.csv` format.")
    csv_timezone: str | None = Field(default=None, description="IANA zone attached to naive CSV timestamps.")
    freeze_encoder: bool = Field(default=True, description="Freeze input BatchNorm + LSTM, as the seed does.")
    epochs: int = Field(default=10, ge=1, description="Upper bound on epochs; early stopping may end sooner.")
    lr: float = Field(default=1e-3, gt=0, description="Peak learning rate.")
    seed: int | None = Field(default=None, ge=0, description="None: the parent's seed.")
    version: str | None = Field(
        default=None, pattern=VERSION_PATTERN, description="None: '<parent version>-ft-<csv name>'."
    )
    progress: bool = Field(default=True, description="Show a tqdm progress bar.")
