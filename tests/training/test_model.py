import pytest

torch = pytest.importorskip("torch")

from runtime.constants import N_CLASSES, N_FEATURES, WINDOW_LENGTH  # noqa: E402
from training.model import SignalPredictor  # noqa: E402


def _windows(batch: int, seed: int = 0) -> "torch.Tensor":
    """Plausible raw candles: a random walk around 100 with intraday range and volumes in the millions."""
    g = torch.Generator().manual_seed(seed)
    close = 100 * torch.exp(torch.cumsum(0.01 * torch.randn(batch, WINDOW_LENGTH, generator=g), dim=1))
    open_ = close * torch.exp(0.005 * torch.randn(batch, WINDOW_LENGTH, generator=g))
    high = torch.maximum(open_, close) * 1.003
    low = torch.minimum(open_, close) * 0.997
    volume = 1e6 * torch.rand(batch, WINDOW_LENGTH, generator=g) + 1e5
    return torch.stack([open_, high, low, close, volume], dim=2)  # (b, 60, 5)


@pytest.fixture
def model() -> SignalPredictor:
    torch.manual_seed(0)
    m = SignalPredictor(hidden_size=32)
    # Give BatchNorm non-trivial running statistics, as training would.
    m.train()
    with torch.no_grad():
        m(_windows(64, seed=1))
    return m.eval()


@pytest.mark.parametrize("batch", [pytest.param(b, id=f"batch{b}") for b in (1, 7, 64)])
def test_forward_returns_probabilities(model: SignalPredictor, batch: int) -> None:
    with torch.no_grad():
        probs = model(_windows(batch))
    assert probs.shape == (batch, N_CLASSES)
    assert probs.dtype == torch.float32
    assert torch.all(probs >= 0)
    assert torch.allclose(probs.sum(dim=1), torch.ones(batch), atol=1e-6)


@pytest.mark.parametrize(
    ("price_scale", "volume_scale"),
    [
        pytest.param(100.0, 1.0, id="dollars-to-cents"),
        pytest.param(1.0, 1000.0, id="lots-to-units"),
        pytest.param(1e-2, 1e-3, id="both-down"),
        pytest.param(400.0, 1.0, id="btc-like-price"),
    ],
)
def test_output_is_scale_invariant(model: SignalPredictor, price_scale: float, volume_scale: float) -> None:
    x = _windows(16)
    scaled = x.clone()
    scaled[:, :, :4] *= price_scale
    scaled[:, :, 4] *= volume_scale
    with torch.no_grad():
        diff = (model(x) - model(scaled)).abs().max().item()
    assert diff <= 1e-3


def test_different_windows_give_different_outputs(model: SignalPredictor) -> None:
    # Guards the invariance test against a model that ignores its input.
    with torch.no_grad():
        assert (model(_windows(4, seed=2)) - model(_windows(4, seed=3))).abs().max().item() > 1e-4


def test_all_zero_volume_gives_finite_output(model: SignalPredictor) -> None:
    x = _windows(3)
    x[:, :, 4] = 0.0
    with torch.no_grad():
        probs = model(x)
    assert torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(3), atol=1e-6)


def test_architecture_rebuilds_the_model(model: SignalPredictor) -> None:
    rebuilt = SignalPredictor(**model.architecture())
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    x = _windows(5)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_initialisation_follows_the_scheme() -> None:
    m = SignalPredictor(hidden_size=16)
    w_hh = m.lstm.weight_hh_l0.detach()  # (4*hidden, hidden): orthogonal columns
    assert torch.allclose(w_hh.T @ w_hh, torch.eye(16), atol=1e-4)
    assert all(torch.count_nonzero(p) == 0 for n, p in m.named_parameters() if n.endswith("bias") and "norm" not in n)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"input_size": 4}, "input_size must be 5", id="wrong-features"),
        pytest.param({"hidden_size": 15}, "even number", id="odd-hidden"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SignalPredictor(**kwargs)


def test_expects_raw_window_shape(model: SignalPredictor) -> None:
    assert _windows(2).shape == (2, WINDOW_LENGTH, N_FEATURES)
