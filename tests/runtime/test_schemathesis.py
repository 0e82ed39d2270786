"""Schemathesis against the service's own OpenAPI document, in-process over ASGI (lifespan and model included).

Every documented operation, /v2 ones included, goes through schemathesis' phases: the documented examples, the
coverage phase (boundary values, each constraint broken in turn, missing parameters, undocumented methods) and
fuzzing, valid and invalid. Each response must be no 5xx (but a 504: a generated X-Deadline-Ms can be 5e-324), a
documented status code with the documented content type, headers and schema; invalid data must be refused with a
4xx; a route that declares the API key must refuse a request without it; an undocumented method must get 405 with
an Allow header. Not checked: that generated valid data is accepted (`positive_data_acceptance`): JSON Schema cannot
state the window's rules (low <= open <= high, time order), so generated "valid" windows are almost always refused
with a 422. Real windows and the documented examples are checked below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import market_windows, window_to_payload
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from runtime.http.app import create_app
from runtime.http.examples import EXAMPLE_RESPONSE, example_request
from runtime.http.openapi import openapi_schema
from runtime.schemas import PredictionRequest, PredictionResponse
from runtime.settings import Settings

KEY = "schemathesis-key-0123456789"
#: Not the default five: the document must list the deployment's exchanges, and the server refuse the others.
EXCHANGES = ("binance", "kraken", "okx")
#: Generated requests per operation in the fuzzing phase. Batch bodies (up to 100 x 60 candles) are costly to
#: generate and a reload re-verifies and warms the model, so those get fewer. Raise locally to search harder.
MAX_EXAMPLES = 20
FEWER = {
    "/predict/batch": 5,
    "/admin/reload": 5,
    "/docs/static/{name}": 5,
    "/v2/repository/models/{model_name}/load": 5,
}

CONFIG = schemathesis.Config.from_dict(
    {
        "auth": {"openapi": {"ApiKey": {"api_key": KEY}}},
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "checks": {
            # 504 is how a deadline that passes in the queue is answered (generated X-Deadline-Ms can be 5e-324);
            # every other 5xx fails, documented or not.
            "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "504"]},
            # Invalid data may be refused by size (101 batch windows are more than the body limit) before parsing.
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "404", "405", "409", "413", "415", "422", "429", "431"]
            },
            "positive_data_acceptance": {"enabled": False},
        },
        # Stateful testing needs links between operations; this API has none.
        "phases": {"stateful": {"enabled": False}},
        "operations": [{"include-path": path, "generation": {"max-examples": n}} for path, n in FEWER.items()],
    }
)
SETTINGS = Settings(
    model_dir=Path(__file__).resolve().parents[2] / "models",
    intra_op_threads=1,
    api_keys=[KEY],
    exchanges=EXCHANGES,
    drift_sample_rate=0,  # no background FP32 load still running when the interpreter exits
)


class FreshApp:
    """The service as a new process has it each time it starts.

    Schemathesis' pytest plugin stops an ASGI app's lifespan after every test and starts it again on the next
    request. The service is built for one lifespan per app (after the first shutdown it stays `draining`), so each
    start gets a new app, as a restarted process would. Nothing is built or loaded until the first request.
    """

    def __init__(self) -> None:
        self.app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or self.app is None:
            self.app = create_app(SETTINGS)
        await self.app(scope, receive, send)


# Loaded from the document itself and given the app as `from_asgi` would: fetching /openapi.json from the app
# would start it (and load the model) while the tests are collected.
schema = schemathesis.openapi.from_dict(openapi_schema(SETTINGS.exchanges), config=CONFIG)
schema.app = FreshApp()


@schema.parametrize()
def test_every_operation_conforms_to_the_openapi_document(case: schemathesis.Case) -> None:
    case.call_and_validate()


def test_the_document_lists_every_route_and_is_the_one_served() -> None:
    documented = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    app = create_app(SETTINGS)
    routed = {(m, route.path) for route in app.routes for m in getattr(route, "methods", None) or () if m != "HEAD"}
    assert documented == routed
    served = schema["/openapi.json"]["GET"].Case().call().json()
    assert served == openapi_schema(EXCHANGES)
    assert served["components"]["schemas"]["PredictionRequest"]["properties"]["exchange"]["enum"] == list(EXCHANGES)


def test_the_documented_examples_are_valid() -> None:
    request = PredictionRequest.model_validate(example_request(), context={"exchanges": EXCHANGES})
    assert request.window.shape == (60, 5)
    PredictionResponse.model_validate(EXAMPLE_RESPONSE)


def _real(seed: int) -> dict[str, Any]:
    return window_to_payload(market_windows(1, seed)[0], "ES=F", exchange="kraken")


def _examples(path: str, method: str = "post") -> list[Any]:
    content = openapi_schema(EXCHANGES)["paths"][path][method]["requestBody"]["content"]["application/json"]
    return [example["value"] for example in content["examples"].values()]


@pytest.mark.parametrize(
    "path,body,headers",
    [
        pytest.param("/predict", _real(1), {}, id="predict"),
        pytest.param("/predict", _real(2), {"X-Deadline-Ms": "5000"}, id="predict-deadline"),
        pytest.param("/predict/batch", {"requests": [_real(3), _real(4), _real(5)]}, {}, id="batch"),
        *(pytest.param("/predict", body, {}, id="predict-documented-example") for body in _examples("/predict")),
        *(
            pytest.param("/predict/batch", body, {}, id="batch-documented-example")
            for body in _examples("/predict/batch")
        ),
        *(
            pytest.param("/v2/models/{model_name}/infer", body, {}, id="v2-documented-example")
            for body in _examples("/v2/models/{model_name}/infer")
        ),
    ],
)
def test_successful_responses_conform_to_the_openapi_document(
    path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    """Generated windows almost never satisfy the rules JSON Schema cannot state (low <= open <= high, time order),
    so the 200 responses are checked with real windows, and with the documented examples Swagger UI sends."""
    params = {"model_name": "signal_predictor"} if "{model_name}" in path else {}
    case = schema[path]["POST"].Case(
        body=body, headers={"X-API-Key": KEY, **headers}, path_parameters=params, media_type="application/json"
    )
    response = case.call_and_validate()
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "path", ["/predict", "/predict/batch", "/v2/models/{model_name}/infer", "/admin/reload", "/metrics"]
)
def test_a_rate_limited_answer_conforms_to_the_openapi_document(path: str) -> None:
    """429 RATE_LIMITED with Retry-After, once a key has used its bucket (generated requests never get there)."""
    limited = create_app(
        SETTINGS.model_copy(update={"rate_limit": 0.001, "rate_limit_burst": 1, "metrics_require_key": True})
    )
    method = "GET" if path == "/metrics" else "POST"
    examples = _examples(path) if method == "POST" else [None]
    params = {"model_name": "signal_predictor"} if "{model_name}" in path else {}
    statuses = []
    for _ in range(2):
        case = schema[path][method].Case(
            body=examples[0], headers={"X-API-Key": KEY}, path_parameters=params, media_type="application/json"
        )
        statuses.append(case.call_and_validate(app=limited).status_code)
    assert statuses == [200, 429]
