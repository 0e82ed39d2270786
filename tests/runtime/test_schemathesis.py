"""Schemathesis against the service's own /openapi.json, in-process over ASGI (lifespan and model included).

Every documented operation gets a bounded number of generated requests, valid and invalid; each response must be
no 5xx, a documented status code, the documented content type, and conform to the documented schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import market_windows, window_to_payload
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from runtime.app import create_app
from runtime.settings import Settings

KEY = "schemathesis-key-0123456789"
#: Generated requests per operation and generation mode. Batch bodies (up to 100 x 60 candles) are costly to
#: generate, so /predict/batch gets fewer. Raise locally to search harder.
MAX_EXAMPLES = {"/predict": 20, "/predict/batch": 6, "/health": 5, "/ready": 5}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(committed_model_dir: Path) -> Iterator[Any]:
    app = create_app(Settings(model_dir=committed_model_dir, intra_op_threads=1, api_keys=[KEY]))
    config = schemathesis.Config.from_dict(
        {
            "headers": {"X-API-Key": KEY},
            "generation": {"max-examples": max(MAX_EXAMPLES.values())},
            # Stateful testing needs links between operations; this API has none.
            "phases": {"stateful": {"enabled": False}},
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    yield schema
    asgi.shutdown_lifespans()  # drains the batcher; otherwise it would live until interpreter exit


# Driven by hand rather than with `schema.parametrize()`: the lazy `from_fixture` integration of schemathesis
# 4.32 fails on pytest 9 (`Function` has no `_nodeid`), and an eagerly loaded schema would build the app and
# load the model at import time.
OPERATIONS = [("POST", "/predict"), ("POST", "/predict/batch"), ("GET", "/health"), ("GET", "/ready"),
              ("GET", "/openapi.json")]


def test_every_operation_is_covered(api_schema: Any) -> None:
    documented = {(op.method.upper(), op.path) for op in (r.ok() for r in api_schema.get_all_operations())}
    assert documented == {op for op in OPERATIONS if op[1] != "/openapi.json"}, documented


CASES = [
    pytest.param("POST", "/predict", GenerationMode.POSITIVE, id="predict-positive"),
    pytest.param("POST", "/predict", GenerationMode.NEGATIVE, id="predict-negative"),
    pytest.param("POST", "/predict/batch", GenerationMode.POSITIVE, id="batch-positive"),
    pytest.param("POST", "/predict/batch", GenerationMode.NEGATIVE, id="batch-negative"),
    # No parameters or body: nothing to negate.
    pytest.param("GET", "/health", GenerationMode.POSITIVE, id="health"),
    pytest.param("GET", "/ready", GenerationMode.POSITIVE, id="ready"),
]


@pytest.mark.parametrize("method,path,mode", CASES)
def test_generated_requests_conform_to_the_openapi_document(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @hypothesis_settings(max_examples=MAX_EXAMPLES[path], deadline=None, suppress_health_check=list(HealthCheck),
                         database=None, print_blob=True)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"X-API-Key": KEY}, checks=CHECKS)

    check()


def _valid(seed: int, include_risk: bool = True) -> dict[str, Any]:
    return {**window_to_payload(market_windows(1, seed)[0], "ES=F"), "include_risk": include_risk}


@pytest.mark.parametrize(
    "path,body,headers",
    [
        pytest.param("/predict", _valid(1), {}, id="predict"),
        pytest.param("/predict", _valid(2, include_risk=False), {"X-Deadline-Ms": "5000"}, id="predict-no-risk"),
        pytest.param("/predict/batch", {"requests": [_valid(3), _valid(4, False), _valid(5)]}, {}, id="batch"),
    ],
)
def test_successful_responses_conform_to_the_openapi_document(
    api_schema: Any, path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    """Generated windows almost never satisfy the rules JSON Schema cannot state (low <= open <= high, time order),
    so the 200 responses are checked with real windows."""
    case = api_schema[path]["POST"].Case(body=body, headers=headers, media_type="application/json")
    response = case.call_and_validate(headers={"X-API-Key": KEY}, checks=CHECKS)
    assert response.status_code == 200, response.text
