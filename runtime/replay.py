"""``python -m runtime replay``: recompute recorded answers offline, with the service's own code, no server.

Input: a ``/predict`` body, a ``/predict/batch`` body, or a JSON-lines file of them. Each body is decoded and
validated exactly as the service does it, run through the same verified model file and turned into the same
response (`runtime.predictions`), printed one JSON document per body (a list for a batch). With ``--expect`` the
recorded answers (same layout: one document per body, or JSON lines) are compared field by field, except the
fields that depend on when they were served (`VOLATILE_FIELDS`); the first mismatch is named and the exit code
is 1. Probabilities are compared exactly: the default model is batch-invariant, so a window's answer does not
depend on what it was batched with when it was served. Exactness holds for the same model file (the audit
record's ``model_sha256`` is checked) and the same onnxruntime build on the same kind of CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from runtime.decoding import decode_batch, decode_prediction
from runtime.errors import EdgeError
from runtime.predictions import VOLATILE_FIELDS, responses
from runtime.risk import window_features
from runtime.schemas import DEFAULT_EXCHANGES
from runtime.session import Model


def _documents(path: Path) -> list[Any]:
    """One JSON document, or JSON lines (one document per non-empty line)."""
    text = path.read_text(encoding="utf-8")
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def replay(model: Model, body: dict[str, Any], exchanges: tuple[str, ...]) -> Any:
    """The answer the service gives for one request body (a dict for /predict, a list for /predict/batch)."""
    raw = json.dumps(body).encode()
    batch = "requests" in body
    reqs = decode_batch(raw, exchanges) if batch else [decode_prediction(raw, exchanges)]
    windows = np.stack([r.window for r in reqs])  # (n, 60, 5)
    probs = model.run(windows)
    answers = responses(reqs, probs, window_features(windows), model.info, request_id="replay")
    return answers if batch else answers[0]


def first_mismatch(got: Any, expected: Any, path: str = "") -> str | None:
    """Where `got` and `expected` first differ (ignoring `VOLATILE_FIELDS`), or None when they agree."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in expected:
            if key in VOLATILE_FIELDS:
                continue
            if key not in got:
                return f"{path}.{key}: recorded {expected[key]!r}, replay has no such field"
            found = first_mismatch(got[key], expected[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(got, list):
        if len(got) != len(expected):
            return f"{path}: recorded {len(expected)} items, replay {len(got)}"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            found = first_mismatch(g, e, f"{path}[{i}]")
            if found:
                return found
        return None
    if got != expected or type(got) is not type(expected):
        return f"{path}: recorded {expected!r}, replay {got!r}"
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("requests", type=Path, help="a /predict or /predict/batch body, or JSON lines of them")
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="the model directory (or version)")
    parser.add_argument("--expect", type=Path, help="recorded answers to compare with (exit 1 on the first mismatch)")
    parser.add_argument("--precision", choices=("auto", "int8", "fp32"), default="auto")
    parser.add_argument(
        "--exchanges", default=",".join(DEFAULT_EXCHANGES), help="accepted exchanges, as EDGE_EXCHANGES"
    )
    parser.add_argument(
        "--no-batch-invariant", action="store_true", help="replay a server run with EDGE_BATCH_INVARIANT=false"
    )
    return parser


def _answers(model: Model, bodies: list[Any], exchanges: tuple[str, ...]) -> Iterator[Any]:
    for body in bodies:
        if not isinstance(body, dict):
            raise ValueError(f"a request body must be a JSON object, got {type(body).__name__}")
        yield replay(model, body, exchanges)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    exchanges = tuple(e.strip() for e in args.exchanges.split(",") if e.strip())
    try:
        bodies = _documents(args.requests)
        expected = _documents(args.expect) if args.expect else None
        model = Model.load(
            args.model_dir,
            precision=args.precision,
            provider="cpu",
            intra_op_threads=1,
            batch_invariant=not args.no_batch_invariant,
        )
        answers = list(_answers(model, bodies, exchanges))
    except (OSError, ValueError, EdgeError) as e:  # ValidationError and JSONDecodeError are ValueErrors
        detail = e.errors(include_url=False)[:3] if isinstance(e, ValidationError) else ""
        print(f"error: {getattr(e, 'message', e)} {detail}".rstrip(), file=sys.stderr)
        return 2
    for answer in answers:
        print(json.dumps(answer, separators=(",", ":")))
    if expected is None:
        return 0
    if len(expected) != len(answers):
        print(f"mismatch: {len(expected)} recorded answers for {len(answers)} requests", file=sys.stderr)
        return 1
    for i, (got, want) in enumerate(zip(answers, expected, strict=True)):
        found = first_mismatch(got, want)
        if found:
            print(f"mismatch in answer {i + 1}: {found}", file=sys.stderr)
            return 1
    print(f"replayed {len(answers)} answer(s): identical to the recorded ones", file=sys.stderr)
    return 0
