"""The training loop: AdamW (or SGD), cosine schedule with warm-up, class weights, gradient clipping, early
stopping on validation loss, best-checkpoint saving, deterministic given (data, config)."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from training.config import TrainingConfig
from training.dataset import Splits, class_weights
from training.model import ENCODER_MODULES, SignalPredictor

logger = logging.getLogger(__name__)


def seed_everything(seed: int, threads: int) -> None:
    """Make a run repeatable: fixed seeds, deterministic kernels, a fixed thread count (sums depend on it)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


@dataclass
class TrainingResult:
    model: SignalPredictor  # best-validation-loss weights, eval mode
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False
    wall_seconds: float = 0.0
    class_weights: list[float] = field(default_factory=list)


def _lr_lambda(config: TrainingConfig, steps_per_epoch: int) -> Any:
    total = config.epochs * steps_per_epoch
    warmup = config.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if config.scheduler == "none":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.no_grad()
def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def freeze_encoder(model: SignalPredictor) -> list[str]:
    """Freeze the seed's encoder (input BatchNorm + LSTM, `ENCODER_MODULES`); return the frozen parameter names.

    Like the seed's `load_pretrained_and_finetune` it clears ``requires_grad``; unlike it, the encoder is also kept
    in eval mode (the caller runs it once, under `no_grad`), so BatchNorm's running statistics stay the parent's
    too: with the seed's version a "frozen" encoder still drifts its normalisation towards the new data.
    """
    frozen = []
    for name, param in model.named_parameters():
        if name.split(".")[0] in ENCODER_MODULES:
            param.requires_grad_(False)
            frozen.append(name)
            logger.info("frozen: %s", name)
    return frozen


def count_parameters(model: SignalPredictor) -> tuple[int, int]:
    """(trainable, total) parameter counts; logged by fine-tuning as the seed does."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _make_optimizer(config: TrainingConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def train_model(
    config: TrainingConfig, splits: Splits, checkpoint: Path, *, start: SignalPredictor | None = None
) -> TrainingResult:
    """Train on `splits.train`, early-stop on `splits.val`, keep the best state in `checkpoint` and return it.

    `start` is a model to continue from (fine-tuning); parameters it has frozen (`freeze_encoder`) stay as they
    are. With the whole encoder frozen its output does not change between epochs, so it is computed once per split
    and only attention + head run per step: the same arithmetic as running the full model each step, far cheaper.
    """
    seed_everything(config.seed, config.num_threads)
    if start is None:
        model = SignalPredictor(hidden_size=config.hidden_size, num_layers=config.num_layers, dropout=config.dropout)
    else:
        model = start
    encoder_frozen = not any(
        p.requires_grad for name, p in model.named_parameters() if name.split(".")[0] in ENCODER_MODULES
    )
    x_train, x_val = torch.from_numpy(splits.train.windows), torch.from_numpy(splits.val.windows)
    step: Callable[[torch.Tensor], torch.Tensor] = model.logits
    if encoder_frozen:
        model.eval()
        x_train, x_val = _batched(model.encode, x_train), _batched(model.encode, x_val)  # (n, 60, hidden)
        step = model.decode
    y_train = torch.from_numpy(splits.train.labels)
    y_val = torch.from_numpy(splits.val.labels)
    weights = class_weights(splits.train.labels) if config.use_class_weights else np.ones(3)
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(config, trainable)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, steps_per_epoch))
    generator = torch.Generator().manual_seed(config.seed)

    result = TrainingResult(model=model, class_weights=[float(w) for w in weights])
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    epochs_without_improvement = 0
    start_time = time.perf_counter()
    # One bar over every step of every epoch: progress inside an epoch and an ETA for the run (an upper bound,
    # since early stopping may end it sooner).
    bar = tqdm(total=config.epochs * steps_per_epoch, unit="batch", disable=not config.progress, dynamic_ncols=True)
    for epoch in range(1, config.epochs + 1):
        bar.set_description(f"epoch {epoch}/{config.epochs}")
        model.train()
        if encoder_frozen:
            model.input_norm.eval()  # not run per step, but never in train mode: its statistics are the parent's
            model.lstm.eval()
        order = torch.randperm(len(x_train), generator=generator)
        total_loss = 0.0
        for i in range(0, len(order), config.batch_size):
            batch = order[i : i + config.batch_size]
            bar.update(1)
            if len(batch) < 2:
                continue  # BatchNorm cannot estimate statistics from one window
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(step(x_train[batch]), y_train[batch])
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(batch)
        train_loss = total_loss / len(x_train)

        model.eval()
        val_logits = _batched(step, x_val)
        val_loss = criterion(val_logits, y_val).item()
        val_acc = (val_logits.argmax(dim=1) == y_val).double().mean().item()
        result.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": float(scheduler.get_last_lr()[0]),
            }
        )
        bar.set_postfix(train_loss=f"{train_loss:.4f}", val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.3f}")
        logger.info("epoch %d: train_loss=%.4f val_loss=%.4f val_acc=%.4f", epoch, train_loss, val_loss, val_acc)

        if val_loss < result.best_val_loss:
            result.best_val_loss = val_loss
            result.best_epoch = epoch
            epochs_without_improvement = 0
            torch.save(model.state_dict(), checkpoint)
        else:
            epochs_without_improvement += 1
            if epochs_without_improvement >= config.patience:
                result.stopped_early = True
                logger.info("early stop after epoch %d; best epoch %d", epoch, result.best_epoch)
                break
    bar.close()
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    model.eval()
    result.wall_seconds = time.perf_counter() - start_time
    return result
