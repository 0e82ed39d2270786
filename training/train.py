"""The training loop: AdamW (or SGD), cosine schedule with warm-up, class weights, gradient clipping, early
stopping on validation loss, best-checkpoint saving, deterministic given (data, config)."""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from training.config import TrainingConfig
from training.dataset import Splits, class_weights
from training.model import SignalPredictor

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
def predict_logits(model: SignalPredictor, windows: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    out = [model.logits(torch.from_numpy(windows[i : i + batch_size])) for i in range(0, len(windows), batch_size)]
    return torch.cat(out)


def train_model(config: TrainingConfig, splits: Splits, checkpoint: Path) -> TrainingResult:
    """Train on `splits.train`, early-stop on `splits.val`, keep the best state in `checkpoint` and return it."""
    seed_everything(config.seed, config.num_threads)
    model = SignalPredictor(hidden_size=config.hidden_size, num_layers=config.num_layers, dropout=config.dropout)
    x_train = torch.from_numpy(splits.train.windows)
    y_train = torch.from_numpy(splits.train.labels)
    y_val = torch.from_numpy(splits.val.labels)
    weights = class_weights(splits.train.labels) if config.use_class_weights else np.ones(3)
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))

    if config.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, steps_per_epoch))
    generator = torch.Generator().manual_seed(config.seed)

    result = TrainingResult(model=model, class_weights=[float(w) for w in weights])
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    epochs_without_improvement = 0
    start = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc="train", unit="epoch", disable=not config.progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total_loss = 0.0
        for i in range(0, len(order), config.batch_size):
            batch = order[i : i + config.batch_size]
            if len(batch) < 2:
                continue  # BatchNorm cannot estimate statistics from one window
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model.logits(x_train[batch]), y_train[batch])
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(batch)
        train_loss = total_loss / len(x_train)

        val_logits = predict_logits(model, splits.val.windows)
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
    result.wall_seconds = time.perf_counter() - start
    return result
