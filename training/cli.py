"""``python -m training train|finetune|parity|rowwise|report``: the commands of the training pipeline.

The CLI is the one place that prints (a summary, or the parity JSON); the library logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from training.config import FinetuneOptions, TrainingConfig
from training.errors import TrainingError

if TYPE_CHECKING:
    from training.pipeline import PipelineResult


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch and step")
    # -v also after the subcommand; SUPPRESS so a subcommand without it does not reset the main parser's value.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log every epoch")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", parents=[verbose], help="train, quantize, export, check parity, write report and manifest"
    )
    train.add_argument("--data", default=None, help="sp500 | nasdaq | both (default) | PATH.csv")
    train.add_argument("--csv-timezone", default=None, help="IANA zone for naive CSV timestamps (e.g. UTC)")
    train.add_argument("--out", type=Path, default=Path("models"), help="output directory (default: models/)")
    train.add_argument("--version", dest="model_version", default=None, help="model version (default 1.0.0)")
    for name, typ in (
        ("epochs", int),
        ("seed", int),
        ("batch-size", int),
        ("lr", float),
        ("hidden-size", int),
        ("patience", int),
        ("horizon", int),
        ("threshold-k", float),
        ("num-threads", int),
        ("latency-runs", int),
    ):
        train.add_argument(
            f"--{name}", type=typ, default=None, help=f"override TrainingConfig.{name.replace('-', '_')}"
        )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    finetune = sub.add_parser(
        "finetune",
        parents=[verbose],
        help="fine-tune a version on a new market's CSV (encoder frozen), then train's whole tail into --out",
    )
    finetune.add_argument("--from", dest="parent", type=Path, default=Path("models"), help="parent version dir")
    finetune.add_argument("--data", required=True, help="PATH.csv of the new market (train's CSV format)")
    finetune.add_argument("--out", type=Path, required=True, help="new version directory (must not exist or be empty)")
    finetune.add_argument("--csv-timezone", default=None, help="IANA zone for naive CSV timestamps (e.g. UTC)")
    finetune.add_argument(
        "--freeze-encoder",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="freeze input norm + LSTM as the seed does (default); --no-freeze-encoder trains everything",
    )
    for name, typ in (("epochs", int), ("lr", float)):
        field = FinetuneOptions.model_fields[name]
        help_text = f"{field.description} (default {field.default})"
        finetune.add_argument(f"--{name}", type=typ, default=None, help=help_text)
    finetune.add_argument("--version", dest="model_version", default=None, help="default <parent>-ft-<csv name>")
    finetune.add_argument("--seed", type=int, default=None, help="default: the parent's seed")
    finetune.add_argument("--no-progress", action="store_true", help="no progress bar")

    parity = sub.add_parser(
        "parity", parents=[verbose], help="re-check a model directory: sha256 of every file, then parity"
    )
    parity.add_argument("--model-dir", type=Path, default=Path("models"))
    parity.add_argument("--data", default=None, help="override the data recorded in the manifest")

    rowwise = sub.add_parser(
        "rowwise",
        parents=[verbose],
        help="add the batch-invariant (Scan) ONNX files to a model directory, checked on its test split",
    )
    rowwise.add_argument("--model-dir", type=Path, default=Path("models"))
    rowwise.add_argument("--data", default=None, help="override the data recorded in the manifest")

    report = sub.add_parser(
        "report",
        parents=[verbose],
        help="render a model directory's REPORT.md again from its manifest (model files untouched)",
    )
    report.add_argument("--model-dir", type=Path, default=Path("models"))
    report.add_argument("--data", default=None, help="where the manifest's data is now (same data, checked)")
    return parser


def _config(args: argparse.Namespace) -> TrainingConfig:
    overrides: dict[str, Any] = {
        key: value
        for key in (
            "data",
            "csv_timezone",
            "epochs",
            "seed",
            "batch_size",
            "lr",
            "hidden_size",
            "patience",
            "horizon",
            "threshold_k",
            "num_threads",
            "latency_runs",
        )
        if (value := getattr(args, key)) is not None
    }
    if args.no_progress:
        overrides["progress"] = False
    return TrainingConfig(**overrides)


def _train(args: argparse.Namespace) -> int:
    from training.pipeline import MODEL_VERSION, run_pipeline

    config = _config(args)
    result = run_pipeline(config, args.out, version=args.model_version or MODEL_VERSION)
    return _print_result(result, args.out)


def _finetune(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.finetune import finetune, shell_command

    given = {
        "data": args.data,
        "csv_timezone": args.csv_timezone,
        "freeze_encoder": args.freeze_encoder,
        "epochs": args.epochs,
        "lr": args.lr,
        "seed": args.seed,
        "version": args.model_version,
        "progress": not args.no_progress,
    }
    options = FinetuneOptions(**{k: v for k, v in given.items() if v is not None})
    result = finetune(args.parent, args.out, options, command=shell_command(list(argv)))
    ft = result.manifest["finetune"]
    print(
        f"\nfine-tuned {result.manifest['parent']['version']} -> {result.manifest['version']}: trainable "
        f"{ft['trainable_parameters']:,} / {ft['total_parameters']:,} parameters, training {ft['training_seconds']} s"
    )
    code = _print_result(result, args.out)
    print(ft["verdict"])
    return code


def _print_result(result: PipelineResult, out: Path) -> int:
    m = result.manifest
    fp32, int8 = m["metrics"]["test_torch_fp32"], m["metrics"]["test_onnx_int8"]
    print(f"\nwrote {out}/ ({', '.join(m['files'])}, manifest.json)")
    print(f"test accuracy {fp32['accuracy']:.4f} (ONNX INT8 {int8['accuracy']:.4f}), macro-F1 {fp32['macro_f1']:.4f}")
    for name, b in m["metrics"]["baselines"].items():
        print(f"  baseline {name}: accuracy {b['accuracy']:.4f}, macro-F1 {b['macro_f1']:.4f}")
    for c in m["parity"]["checks"]:
        print(
            f"  parity {c['name']}: {c['metric']}={c['value']:.3g} (limit {c['limit']:g}) "
            f"{'ok' if c['passed'] else 'FAILED'}"
        )
    for t in (1, 2):
        lat = m["latency"][f"threads_{t}"]
        print(
            f"  latency batch 1, {t} thread(s): FP32 {lat['fp32']['median_ms']:.3f} ms, "
            f"INT8 {lat['int8']['median_ms']:.3f} ms ({lat['int8_speedup']:.2f}x)"
        )
    print(f"training {m['training']['wall_seconds']:.0f} s, pipeline {m['pipeline_wall_seconds']:.0f} s")
    print(m["summary"])
    if not result.parity.passed:
        print("PARITY FAILED", file=sys.stderr)
        return 1
    return 0


def _parity(args: argparse.Namespace) -> int:
    from training.pipeline import recheck

    report = recheck(args.model_dir, args.data)
    print(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


def _rowwise(args: argparse.Namespace) -> int:
    from training.pipeline import add_rowwise

    record = add_rowwise(args.model_dir, args.data)
    print(json.dumps(record, indent=2))
    return 0


def _report(args: argparse.Namespace) -> int:
    from training.rerender import rerender_report

    print(json.dumps(rerender_report(args.model_dir, args.data), indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "finetune":
            return _finetune(args, argv)
        return {"train": _train, "parity": _parity, "rowwise": _rowwise, "report": _report}[args.command](args)
    except (TrainingError, ValidationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
