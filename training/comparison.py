"""Did fine-tuning help? Parent vs fine-tuned vs naive baselines on the new market, and what the parent's own market
lost: the numbers, a verdict derived from them (so the text cannot overclaim), and the report's Markdown."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.constants import CLASSES, N_CLASSES
from training.dataset import Samples
from training.evaluate import baselines, calibration, classification_metrics
from training.model import SignalPredictor
from training.parity import run_torch

#: Differences smaller than these are "level": the test windows overlap heavily, so small moves are noise.
LEVEL_ACCURACY = 0.01
LEVEL_MACRO_F1 = 0.01
LEVEL_NLL = 0.005


def scores(labels: npt.NDArray[np.int64], probs: npt.NDArray[Any]) -> dict[str, float]:
    """Accuracy, macro-F1, NLL and top-label ECE of one model's probabilities."""
    m = classification_metrics(labels, probs.argmax(axis=1))
    calib = calibration(labels, probs)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "nll": calib["nll"], "ece": calib["ece"]}


def _model_scores(model: SignalPredictor, samples: Samples) -> tuple[dict[str, float], npt.NDArray[Any]]:
    probs = run_torch(model, samples.windows, 256)
    return scores(samples.labels, probs), probs


def new_market(parent: SignalPredictor, child: SignalPredictor, train: Samples, test: Samples) -> dict[str, Any]:
    """Scores on the new market's test split: parent as shipped, fine-tuned, and the naive baselines.

    The hard-label baselines have no probabilities, so no NLL or ECE; the class prior (train-split class frequencies
    for every window) is the probabilistic baseline those two are compared with.
    """
    parent_scores, _ = _model_scores(parent, test)
    child_scores, _ = _model_scores(child, test)
    prior = np.bincount(train.labels, minlength=N_CLASSES) / len(train)
    prior_probs = np.tile(prior, (len(test), 1))
    rows: dict[str, dict[str, float | None]] = {
        f"class prior from train ({', '.join(f'{c} {p:.2f}' for c, p in zip(CLASSES, prior, strict=True))})": {
            **scores(test.labels, prior_probs)
        }
    }
    for name, b in baselines(train, test).items():
        rows[name] = {"accuracy": b["accuracy"], "macro_f1": b["macro_f1"], "nll": None, "ece": None}
    return {"windows": len(test), "parent": parent_scores, "finetuned": child_scores, "baselines": rows}


def forgetting(parent: SignalPredictor, child: SignalPredictor, test: Samples) -> dict[str, Any]:
    """How the fine-tuned model does on the parent's own test split, next to the parent."""
    parent_scores, parent_probs = _model_scores(parent, test)
    child_scores, child_probs = _model_scores(child, test)
    return {
        "windows": len(test),
        "parent": parent_scores,
        "finetuned": child_scores,
        "change": {k: child_scores[k] - parent_scores[k] for k in parent_scores},
        "argmax_agreement_with_parent": float(np.mean(parent_probs.argmax(1) == child_probs.argmax(1))),
    }


def _moved(delta: float, level: float, better_if_higher: bool = True) -> str:
    if abs(delta) < level:
        return "level"
    return "better" if (delta > 0) == better_if_higher else "worse"


def verdict(market: dict[str, Any], forgot: dict[str, Any] | None) -> str:
    """One plain paragraph from the numbers: did fine-tuning help on the new market, and at what cost."""
    p, c = market["parent"], market["finetuned"]
    moves = {
        "accuracy": _moved(c["accuracy"] - p["accuracy"], LEVEL_ACCURACY),
        "macro-F1": _moved(c["macro_f1"] - p["macro_f1"], LEVEL_MACRO_F1),
        "NLL": _moved(c["nll"] - p["nll"], LEVEL_NLL, better_if_higher=False),
    }
    better = [k for k, v in moves.items() if v == "better"]
    worse = [k for k, v in moves.items() if v == "worse"]
    if better and not worse:
        head = f"Fine-tuning helped on the new market: {', '.join(better)} improved over the parent"
    elif better:
        head = f"Fine-tuning gave mixed results: {', '.join(better)} improved, {', '.join(worse)} got worse"
    else:
        head = "Fine-tuning did not help on the new market: no metric improved beyond noise over the parent"
    best_acc = max(b["accuracy"] for b in market["baselines"].values())
    best_f1 = max(b["macro_f1"] for b in market["baselines"].values())
    prior_nll = next(b["nll"] for b in market["baselines"].values() if b["nll"] is not None)
    vs_best = {
        "accuracy": _moved(c["accuracy"] - best_acc, LEVEL_ACCURACY),
        "macro-F1": _moved(c["macro_f1"] - best_f1, LEVEL_MACRO_F1),
        "NLL": _moved(c["nll"] - prior_nll, LEVEL_NLL, better_if_higher=False),
    }
    text = (
        f"{head} (accuracy {p['accuracy']:.3f} -> {c['accuracy']:.3f}, macro-F1 {p['macro_f1']:.3f} -> "
        f"{c['macro_f1']:.3f}, NLL {p['nll']:.3f} -> {c['nll']:.3f}, ECE {p['ece']:.3f} -> {c['ece']:.3f}). "
        f"Against the naive baselines the fine-tuned model's accuracy is "
        f"{vs_best['accuracy']} vs the best ({best_acc:.3f}), its macro-F1 "
        f"{vs_best['macro-F1']} vs the best ({best_f1:.3f}) and its NLL "
        f"{vs_best['NLL']} vs the class prior's ({prior_nll:.3f})."
    )
    if vs_best["accuracy"] != "better" and vs_best["NLL"] != "better":
        text += (
            " So it shows no edge a trader could use: its accuracy and NLL are no better than the naive"
            " baselines' (always the majority class, the class prior); shadow it rather than promote it on these"
            " figures."
        )
    if forgot is None:
        return text + " Forgetting on the parent's market was not measured (see the report)."
    d = forgot["change"]
    return text + (
        f" On the parent's own test split accuracy changed by {d['accuracy'] * 100:+.1f} points, NLL by "
        f"{d['nll']:+.3f}; {forgot['argmax_agreement_with_parent'] * 100:.1f} % of signals match the parent's."
    )


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _row(name: str, s: dict[str, Any]) -> str:
    acc = "—" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f} %"
    return f"| {name} | {acc} | {_cell(s['macro_f1'], '.3f')} | {_cell(s['nll'], '.3f')} | {_cell(s['ece'], '.3f')} |"


def render(manifest: dict[str, Any]) -> str:
    """The report's fine-tuning section, from the manifest's ``parent`` and ``finetune`` records."""
    parent, ft = manifest["parent"], manifest["finetune"]
    market, forgot = ft["new_market_test"], ft.get("parent_market_test")
    header = "| model | accuracy | macro-F1 | NLL | ECE |\n|---|---|---|---|---|"
    market_rows = "\n".join(
        [
            _row(f"parent {parent['version']}, as shipped (torch FP32)", market["parent"]),
            _row("fine-tuned (torch FP32)", market["finetuned"]),
            *(_row(name, b) for name, b in market["baselines"].items()),
        ]
    )
    if forgot is None:
        forgot_text = f"Not measured: {ft.get('parent_market_unavailable', 'parent test split unavailable')}."
    else:
        change = forgot["change"]
        change_row = (
            f"| change | {change['accuracy'] * 100:+.1f} points | {change['macro_f1']:+.3f} | "
            f"{change['nll']:+.3f} | {change['ece']:+.3f} |"
        )
        agreement = forgot["argmax_agreement_with_parent"] * 100
        forgot_text = f"""{forgot["windows"]} windows, rebuilt from the parent's manifest (`--data {parent["data"]}`).

{header}
{_row(f"parent {parent['version']}", forgot["parent"])}
{_row("fine-tuned", forgot["finetuned"])}
{change_row}

The fine-tuned model gives the parent's signal on {agreement:.1f} % of these windows."""
    frozen = (
        f"encoder frozen ({', '.join(ft['frozen_modules'])}: {len(ft['frozen_parameters'])} tensors, weights and "
        "BatchNorm running statistics unchanged)"
        if ft["frozen_modules"]
        else "nothing frozen (`--no-freeze-encoder`)"
    )
    return f"""## Fine-tuning

Parent: version {parent["version"]} (`{parent["dir"]}`, checkpoint sha256 `{parent["checkpoint_sha256"]}`), {frozen};
trainable parameters {ft["trainable_parameters"]:,} of {ft["total_parameters"]:,}
({100 * ft["trainable_parameters"] / ft["total_parameters"]:.1f} %). Command:

```bash
{ft["command"]}
```

The training loop took {ft["training_seconds"]:.1f} s (the whole command, export and checks included, is
`pipeline_wall_seconds` in manifest.json), on a 2-CPU machine shared with other jobs.

**{ft["verdict"]}**

### New market, test split ({market["windows"]} windows)

{header}
{market_rows}

### Parent's market, test split: what was forgotten

{forgot_text}
"""
