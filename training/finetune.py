"""`python -m training finetune`: the seed's transfer learning (`load_pretrained_and_finetune`), end to end.

Load a parent version's checkpoint and architecture from its manifest (every file sha256-verified with the
runtime's manifest code), freeze the encoder as the seed does, train on a new market's CSV with `train`'s
validation, labels and chronological splits, then run `train`'s whole tail into a new version directory whose
manifest records the parent, what was frozen, and an honest comparison (`training.comparison`).

Nothing is written to `--out` unless everything succeeds: the version is built in a hidden directory beside it
and renamed into place at the end, and every input is checked before training starts.
"""

from __future__ import annotations

import copy
import io
import logging
import re
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch

from runtime.constants import CLASSES, FEATURES, N_CLASSES, TORCH_FILE, VERSION_PATTERN, WINDOW_LENGTH
from runtime.errors import ModelLoadError
from runtime.manifest import Manifest
from training import comparison
from training.config import FinetuneOptions, TrainingConfig
from training.dataset import Splits
from training.errors import ArtifactError, ParityError, TrainingError
from training.manifest import load_manifest, verify_files
from training.model import ENCODER_MODULES, SignalPredictor
from training.pipeline import PipelineResult, load_splits, write_version
from training.train import count_parameters, freeze_encoder, train_model

logger = logging.getLogger(__name__)

#: Fewest windows a split may have: validation drives early stopping and test the comparison, and a handful of
#: windows would make both meaningless.
MIN_SPLIT_WINDOWS: Final = 30


@dataclass(frozen=True)
class Parent:
    dir: Path
    manifest: dict[str, Any]
    model: SignalPredictor
    checkpoint_sha256: str
    config: TrainingConfig


def load_parent(parent_dir: Path) -> Parent:
    """The parent's verified checkpoint in the architecture its manifest names, or `ArtifactError` naming the cause."""
    manifest = load_manifest(parent_dir)
    problems = {name: why for name, why in verify_files(parent_dir, manifest).items() if why != "ok"}
    if problems:
        listed = "; ".join(f"{name}: {why}" for name, why in problems.items())
        raise ArtifactError(f"parent {parent_dir} does not match its manifest ({listed}); refusing to fine-tune it")
    contract = {"window_length": WINDOW_LENGTH, "features": list(FEATURES), "classes": list(CLASSES)}
    for key, expected in contract.items():
        if manifest.get(key) != expected:
            raise ArtifactError(
                f"parent {parent_dir}: incompatible architecture, manifest {key} is {manifest.get(key)!r}, "
                f"this code serves {expected!r}"
            )
    arch = manifest.get("architecture")
    if not isinstance(arch, dict) or arch.get("num_classes", N_CLASSES) != N_CLASSES:
        raise ArtifactError(f"parent {parent_dir}: incompatible architecture {arch!r} (need {N_CLASSES} classes)")
    try:
        model = SignalPredictor(**arch)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"parent {parent_dir}: incompatible architecture {arch!r}: {e}") from e
    try:
        # The bytes loaded are the bytes hashed (`Manifest.verify` returns them), so nothing can swap the file.
        checkpoint = Manifest.load(parent_dir).verify(parent_dir, TORCH_FILE)
        state = torch.load(io.BytesIO(checkpoint), weights_only=True)
        model.load_state_dict(state)
    except ModelLoadError as e:
        raise ArtifactError(f"parent {parent_dir}: {e}") from e
    except (RuntimeError, ValueError, KeyError) as e:
        raise ArtifactError(
            f"parent {parent_dir}: incompatible architecture, {TORCH_FILE} does not fit {arch!r}: {e}"
        ) from e
    model.eval()
    try:
        config = TrainingConfig.recorded(manifest)
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"parent {parent_dir}: manifest has no usable training.config: {e}") from e
    return Parent(parent_dir, manifest, model, manifest["files"][TORCH_FILE]["sha256"], config)


def _child_config(parent: Parent, options: FinetuneOptions) -> TrainingConfig:
    """The parent's config (labels, fractions, optimiser) with the new data and the fine-tuning knobs."""
    arch = parent.model.architecture()
    base = parent.config.model_dump()
    return TrainingConfig.model_validate(
        {
            **base,
            "data": options.data,
            "csv_timezone": options.csv_timezone,
            "hidden_size": arch["hidden_size"],
            "num_layers": arch["num_layers"],
            "dropout": arch["dropout"],
            "epochs": options.epochs,
            "lr": options.lr,
            "seed": parent.config.seed if options.seed is None else options.seed,
            # A warm-up longer than the run is refused by the config; a one-epoch fine-tune needs none.
            "warmup_epochs": min(base["warmup_epochs"], options.epochs - 1),
            "progress": options.progress,
        }
    )


def _check_splits(splits: Splits) -> None:
    for name, samples in splits.items():
        if len(samples) < MIN_SPLIT_WINDOWS:
            raise TrainingError(
                f"too few windows for the split: {name!r} has {len(samples)}, fine-tuning needs at least "
                f"{MIN_SPLIT_WINDOWS} per split; give --data more rows"
            )


def _version(parent: Parent, options: FinetuneOptions) -> str:
    if options.version is not None:
        version = options.version
    else:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(options.data).stem).strip("-.") or "data"
        version = f"{parent.manifest.get('version', 'model')}-ft-{stem}"[:64]
    if not re.fullmatch(VERSION_PATTERN, version):  # a default built from a parent's odd version string
        raise ValueError(f"version {version!r} must match {VERSION_PATTERN}; pass --version")
    return version


def _check_out(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise TrainingError(f"--out {out_dir} already exists and is not empty; fine-tuning writes a new directory")


def finetune(parent_dir: Path, out_dir: Path, options: FinetuneOptions, *, command: str = "") -> PipelineResult:
    """Fine-tune the version in `parent_dir` on `options.data`; write the new version to `out_dir`, or nothing.

    Raises `ArtifactError` (bad parent), `DataValidationError` (bad CSV rows), `TrainingError` (too little data,
    `out_dir` in use), `ParityError` (the exported graphs do not match) or `ValueError` (bad option).
    """
    started = time.perf_counter()
    _check_out(out_dir)
    parent = load_parent(parent_dir)
    version = _version(parent, options)
    config = _child_config(parent, options)
    try:
        splits, provenance = load_splits(config)
    except (ValueError, OSError) as e:
        if isinstance(e, TrainingError):
            raise
        raise TrainingError(f"--data {options.data}: {e}") from e
    _check_splits(splits)

    model = copy.deepcopy(parent.model)
    frozen = freeze_encoder(model) if options.freeze_encoder else []
    trainable, total = count_parameters(model)
    logger.info("trainable: %s / %s (%.1f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        result = train_model(config, splits, build / TORCH_FILE, start=model)
        market = comparison.new_market(parent.model, result.model, splits.train, splits.test)
        forgot, unavailable = _forgetting(parent, result.model)
        parent_record = {
            "version": parent.manifest.get("version"),
            "dir": str(parent_dir),
            "checkpoint_sha256": parent.checkpoint_sha256,
            "data": parent.config.data,
        }
        record: dict[str, Any] = {
            "command": command or f"python -m training finetune --from {parent_dir} --data {options.data}",
            "freeze_encoder": options.freeze_encoder,
            "frozen_modules": list(ENCODER_MODULES) if options.freeze_encoder else [],
            "frozen_parameters": frozen,
            "trainable_parameters": trainable,
            "total_parameters": total,
            "training_seconds": round(result.wall_seconds, 1),
            "new_market_test": market,
            "parent_market_test": forgot,
            "verdict": comparison.verdict(market, forgot),
        }
        if unavailable:
            record["parent_market_unavailable"] = unavailable
        built = write_version(
            config,
            splits,
            provenance,
            result,
            build,
            version=version,
            started=started,
            extra={"parent": parent_record, "finetune": record},
            summary_prefix=record["verdict"],
        )
        if not built.parity.passed:
            try:
                built.parity.raise_for_failures()
            except ParityError as e:
                if not options.freeze_encoder:
                    raise
                hint = "only the head was trained (encoder frozen): --no-freeze-encoder adapts the whole model"
                raise ParityError(f"{e}\n  {hint}") from e
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); rename cannot replace a directory on every platform
        build.rename(out_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return PipelineResult(manifest=built.manifest, parity=built.parity, out_dir=out_dir)


def _forgetting(parent: Parent, child: SignalPredictor) -> tuple[dict[str, Any] | None, str | None]:
    """The parent's test split rebuilt from its manifest; if its data cannot be loaded here, say why instead."""
    try:
        parent_splits, _ = load_splits(parent.config)
    except (ValueError, OSError, ImportError) as e:
        logger.warning("forgetting not measured: %s", e)
        return None, f"{type(e).__name__}: {e}"
    return comparison.forgetting(parent.model, child, parent_splits.test), None


def shell_command(argv: list[str]) -> str:
    """The command line as the user could paste it again (recorded in the manifest and the report)."""
    return "python -m training " + shlex.join(argv)
