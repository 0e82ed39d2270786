"""The SignalPredictor network: raw OHLCV window in, class probabilities out.

Normalisation is part of `forward` on purpose: it is then part of the exported ONNX graph, so the `.onnx` file
alone is the complete model, no client can skew the preprocessing, and one model serves any price scale.
"""

from __future__ import annotations

from typing import Any, Final

import torch
from torch import nn

from runtime.constants import N_CLASSES, N_FEATURES

#: Floor on the window's mean volume. Volumes are relative to the window mean, so any positive floor keeps
#: scale invariance for real volumes; the floor only matters when the whole window traded nothing (then every
#: relative volume is 0 and the output stays finite).
VOLUME_FLOOR = 1e-12


def normalise_window(x: torch.Tensor) -> torch.Tensor:
    """Raw window → scale-free features of the same shape.

    Prices become log(price / last close): multiplying every price by a constant leaves them unchanged.
    Volume becomes log1p(volume / window mean volume): likewise for a change of volume unit.
    """
    # x: (b, t, 5) raw open, high, low, close, volume
    prices = x[:, :, 0:4]  # (b, t, 4)
    volume = x[:, :, 4:5]  # (b, t, 1)
    last_close = x[:, -1:, 3:4]  # (b, 1, 1)
    log_prices = torch.log(prices / last_close)  # (b, t, 4); last close maps to exactly 0
    mean_volume = volume.mean(dim=1, keepdim=True).clamp_min(VOLUME_FLOOR)  # (b, 1, 1)
    rel_volume = torch.log1p(volume / mean_volume)  # (b, t, 1)
    return torch.cat([log_prices, rel_volume], dim=2)  # (b, t, 5)


class AttentionPooling(nn.Module):
    """Additive (Bahdanau-style) attention that pools a sequence of hidden states into one vector."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: (b, t, hidden)
        scores = self.score(torch.tanh(self.proj(h)))  # (b, t, 1)
        weights = torch.softmax(scores, dim=1)  # (b, t, 1), sums to 1 over time
        return (weights * h).sum(dim=1)  # (b, hidden)


#: The seed's encoder (`load_pretrained_and_finetune` freezes parameters whose name contains one of these).
ENCODER_MODULES: Final = ("input_norm", "lstm")


class SignalPredictor(nn.Module):
    """BatchNorm → 2-layer LSTM → additive attention pooling → MLP head → softmax over (sell, hold, buy).

    The constructor's keyword arguments are exactly what `architecture()` returns, so
    ``SignalPredictor(**manifest["architecture"])`` rebuilds the network before loading its state_dict.
    """

    def __init__(
        self,
        input_size: int = N_FEATURES,
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.2,
        num_classes: int = N_CLASSES,
    ) -> None:
        super().__init__()
        if input_size != N_FEATURES:
            raise ValueError(f"input_size must be {N_FEATURES} (open, high, low, close, volume), got {input_size}")
        if hidden_size < 2 or hidden_size % 2:
            raise ValueError(f"hidden_size must be an even number >= 2, got {hidden_size}")
        self._arch: dict[str, Any] = {
            "input_size": input_size,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "dropout": dropout,
            "num_classes": num_classes,
        }
        self.input_norm = nn.BatchNorm1d(input_size)
        # nn.LSTM applies dropout only between layers; with one layer it would warn and do nothing.
        self.lstm = nn.LSTM(
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.attention = AttentionPooling(hidden_size)
        self.head = nn.Sequential(
            nn.Linear(hidden_size, hidden_size // 2),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size // 2, num_classes),
        )
        self._init_weights()

    def architecture(self) -> dict[str, Any]:
        """Constructor keyword arguments, for the manifest."""
        return dict(self._arch)

    def _init_weights(self) -> None:
        # Orthogonal recurrent weights keep the recurrence's gradient norm stable over 60 steps; Xavier suits the
        # tanh/sigmoid gates and the attention's tanh; zero biases start every gate and class neutral.
        for name, param in self.lstm.named_parameters():
            if name.startswith("weight_ih"):
                nn.init.xavier_uniform_(param)
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(param)
            elif name.startswith("bias"):
                nn.init.zeros_(param)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw window (b, t, 5) → LSTM states (b, t, hidden): the encoder, which fine-tuning freezes."""
        feats = normalise_window(x)  # (b, t, 5)
        # BatchNorm1d normalises channels on axis 1, so move features there and back.
        feats = self.input_norm(feats.transpose(1, 2)).transpose(1, 2)  # (b, t, 5)
        h: torch.Tensor = self.lstm(feats)[0]  # (b, t, hidden)
        return h

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """LSTM states (b, t, hidden) → unnormalised class scores (b, 3): attention pooling and the head."""
        pooled = self.attention(h)  # (b, hidden)
        logits: torch.Tensor = self.head(pooled)  # (b, classes)
        return logits

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw window (b, t, 5) → unnormalised class scores (b, 3); training uses these for the loss."""
        return self.decode(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw window float32 (b, 60, 5) → probabilities (b, 3) in `runtime.constants.CLASSES` order."""
        return torch.softmax(self.logits(x), dim=-1)  # (b, classes)
