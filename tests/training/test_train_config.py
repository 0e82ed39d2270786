import pytest
from pydantic import ValidationError

from training.config import TrainingConfig


def test_defaults_are_the_product_model() -> None:
    config = TrainingConfig()
    assert (config.hidden_size, config.num_layers, config.optimizer, config.scheduler) == (128, 2, "adamw", "cosine")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"optimizer": "sgd", "lr": 0.001}, "sgd' needs lr >= 0.01", id="sgd-low-lr"),
        pytest.param({"scheduler": "none", "warmup_epochs": 2}, "needs a scheduler", id="warmup-without-scheduler"),
        pytest.param({"epochs": 2, "warmup_epochs": 2}, "less than epochs", id="warmup-as-long-as-training"),
        pytest.param({"train_fraction": 0.8, "val_fraction": 0.2}, "room for a test split", id="no-test-split"),
        pytest.param({"hidden_size": 33}, "must be even", id="odd-hidden"),
        pytest.param({"optimiser": "adamw"}, "Extra inputs are not permitted", id="typo-field"),
        pytest.param({"optimizer": "adam"}, "'adamw' or 'sgd'", id="unknown-optimizer"),
        pytest.param({"lr": 0}, "greater than 0", id="zero-lr"),
    ],
)
def test_invalid_combinations_are_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        TrainingConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"optimizer": "sgd", "lr": 0.01}, id="sgd-at-limit"),
        pytest.param({"scheduler": "none", "warmup_epochs": 0}, id="no-scheduler-no-warmup"),
    ],
)
def test_valid_edge_cases_are_accepted(kwargs: dict[str, object]) -> None:
    TrainingConfig(**kwargs)  # type: ignore[arg-type]
