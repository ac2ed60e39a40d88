"""How much of a gain's seed-to-seed noise is hyper-parameter selection (issue #23, item 4).

The controlled experiment: the quickstart's ``zoo-digits04`` source (pre-trained on digits 0-4)
on digits 5-9 at 4 labels per class, ``finetune`` against ``scratch``, 10 seeds, under variants
of the selection protocol:

- ``old``: the protocol before issue #23 (a mid-point Latin hypercube with fixed permutations,
  the same points in every cell; trials and epochs ranked by validation accuracy, loss breaking
  ties), re-created here by patching the two functions it lived in;
- ``loss_first``: the seeded design, ranked by validation loss (accuracy on ties);
- ``new``: the package's protocol (seeded design, ranked by accuracy with loss breaking ties);
- ``defaults``: one trial at each space's geometric centre (no search);
- ``no_burn_in``: ``new`` without the burn-in (``min_epochs: 1``), as before issue #23's
  scratch-at-chance fix: early stopping could end a run at epoch 5 and retrain it for 1 epoch;
- ``burn_in_5``: ``new`` with ``min_epochs: 5`` (the first halving rung of this suite).

Per variant it prints the mean gain (finetune - scratch test accuracy), the SD of the per-seed
gain, how often the selected trial's validation accuracy is exactly 1.0, and which trials won.

    python tests/benchmarks/selection_noise.py                    # every variant, 10 seeds
    python tests/benchmarks/selection_noise.py --variants new old --seeds 5

Each variant runs in its own process (the patches must not leak), in-process cells (jobs 1),
with results under ``--out`` (default /tmp/selection_noise); set ``ATLBENCH_CACHE`` for the
zoo's pre-training cache. Not a unit test: minutes per variant on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

VARIANTS = ("old", "loss_first", "new", "defaults", "no_burn_in", "burn_in_5")
MIN_EPOCHS = {"no_burn_in": 1, "burn_in_5": 5}  # the rest: the package default
FT_SPACE = {"lr": (3e-4, 1e-2), "backbone_lr_mult": (0.03, 1.0)}  # finetune's default search
SCRATCH_SPACE = {"lr": (3e-4, 1e-2)}


def suite(variant: str, seeds: int, max_epochs: int) -> dict[str, Any]:
    """The quickstart's digits source, target and training section, one budget, two strategies."""
    strategies: list[Any] = ["finetune", "scratch"]
    trials = 4
    if variant == "defaults":  # the geometric centre of each strategy's own space, one trial
        trials = 1
        centre = {k: math.sqrt(lo * hi) for k, (lo, hi) in FT_SPACE.items()}
        strategies = [
            {"name": "finetune", "search": centre},
            {"name": "scratch", "search": {"lr": math.sqrt(3e-4 * 1e-2)}},
        ]
    training: dict[str, Any] = {
        "max_epochs": max_epochs,
        "patience": 4,
        "batch_size": 32,
        "min_epoch_samples": 128,
        "trials": trials,
    }
    if variant in MIN_EPOCHS:
        training["min_epochs"] = MIN_EPOCHS[variant]
    return {
        "name": f"selection-noise-{variant}",
        "seeds": list(range(seeds)),
        "device": "cpu",
        "sources": [
            {
                "id": "zoo-digits04",
                "zoo": {
                    "arch": "test_resnet",
                    "input_size": 24,
                    "pretrain_on": {"task": "digits", "classes": [0, 1, 2, 3, 4]},
                    "epochs": 20,
                },
            }
        ],
        "targets": [{"id": "digits5-9", "builtin": {"task": "digits", "classes": [5, 6, 7, 8, 9]}}],
        "strategies": strategies,
        "budgets": [{"per_class": 4}],
        "estimators": [],
        "cka": False,
        "training": training,
    }


def patch_old_protocol() -> None:
    """Put back the pre-#23 design and ranking (copied from the package before the change)."""
    import numpy as np

    import atlbench.tuning as tuning
    from atlbench.protocol import Dimension, LogRange

    def column(dim: Dimension, n: int) -> list[Any]:
        if isinstance(dim, LogRange):
            lo, hi = math.log(dim.low), math.log(dim.high)
            return [float(math.exp(lo + (i + 0.5) / n * (hi - lo))) for i in range(n)]
        if isinstance(dim, tuple):
            return [dim[min(len(dim) - 1, int((i + 0.5) * len(dim) / n))] for i in range(n)]
        return [dim] * n

    def midpoint_design(space: dict[str, Dimension], trials: int, seed: int) -> list[dict]:
        names = sorted(space)
        columns: dict[str, list[Any]] = {}
        for j, name in enumerate(names):
            col = column(space[name], trials)
            if j > 0 and trials > 1:
                order = np.random.default_rng([1979, j]).permutation(trials)
                col = [col[i] for i in order]
            columns[name] = col
        return [{name: columns[name][i] for name in names} for i in range(trials)]

    tuning.design = midpoint_design  # type: ignore[assignment]
    patch_accuracy_first()


def patch_loss_first() -> None:
    """Rank epochs and trials by validation loss, accuracy breaking ties."""
    import atlbench.train as train

    def loss_first(val_acc: float, val_loss: float) -> tuple[float, float]:
        return (-val_loss if math.isfinite(val_loss) else -math.inf, val_acc)

    train.selection_score = loss_first  # type: ignore[assignment]


def patch_accuracy_first() -> None:
    """Rank epochs and trials by validation accuracy, loss breaking ties."""
    import atlbench.train as train

    def accuracy_first(val_acc: float, val_loss: float) -> tuple[float, float]:
        return (val_acc, -val_loss if math.isfinite(val_loss) else -math.inf)

    train.selection_score = accuracy_first  # type: ignore[assignment]


def run_variant(variant: str, seeds: int, max_epochs: int, out: Path) -> dict[str, Any]:
    """Run one variant's cells (cached by the store) and summarise them."""
    import numpy as np
    import torch

    from atlbench import run_suite

    torch.set_num_threads(1)
    if variant == "old":
        patch_old_protocol()
    elif variant == "loss_first":
        patch_loss_first()
    views = run_suite(
        suite(variant, seeds, max_epochs),
        results_dir=out / "results",
        reports_dir=out / "reports",
        quiet=True,
    )
    rec = views.records
    rec = rec[rec.status == "done"]
    acc = rec.pivot_table(index="seed", columns="strategy", values="test_acc")
    gain = (acc["finetune"] - acc["scratch"]).to_numpy()
    summary: dict[str, Any] = {
        "variant": variant,
        "seeds": len(gain),
        "mean_gain": float(np.mean(gain)),
        "sd_gain": float(np.std(gain, ddof=1)),
        "gains": [round(float(g), 4) for g in gain],
    }
    for strategy in ("finetune", "scratch"):
        part = rec[rec.strategy == strategy]
        accs = part.test_acc.to_numpy()
        trial_accs = [t["val_acc"] for trials in part.trials for t in trials]
        winners = []
        for hp, trials in zip(part.hparams, part.trials, strict=True):
            lrs = sorted(t["lr"] for t in trials)
            rank = lrs.index(hp["lr"]) + 1 if hp["lr"] in lrs else 0
            point = {k: round(v, 5) for k, v in hp.items() if k in FT_SPACE}
            winners.append({"lr_rank": rank, "of": len(lrs), **point})
        summary[strategy] = {
            "mean_acc": float(np.mean(accs)),
            "sd_acc": float(np.std(accs, ddof=1)),
            "min_acc": float(np.min(accs)),
            "selected_val_acc_1": float(np.mean(part.val_acc.to_numpy() == 1.0)),
            "trial_val_acc_1": float(np.mean(np.asarray(trial_accs) == 1.0)),
            "winner_highest_lr": float(np.mean([w["lr_rank"] == w["of"] for w in winners])),
            "distinct_winners": len({json.dumps(w, sort_keys=True) for w in winners}),
            "cell_s": float(part.cost_s.mean()) if "cost_s" in part else float("nan"),
            "winners": winners,
        }
    return summary


def _side(s: dict[str, Any]) -> str:
    return (
        f"{100 * s['mean_acc']:5.1f} {100 * s['sd_acc']:4.1f} {100 * s['min_acc']:5.1f}"
        f" {s['selected_val_acc_1']:5.2f} {s['trial_val_acc_1']:5.2f}"
        f" {s['winner_highest_lr']:5.2f} {s['distinct_winners']:3d}"
        f" {s.get('cell_s', float('nan')):6.1f}"
    )


def table(rows: list[dict[str, Any]]) -> str:
    """Gains in points; per side: acc, SD, min, share of selected / all trials with val acc 1.0,
    share of cells won by the design's highest lr, distinct winning points, mean cell seconds."""
    side = "  acc   SD   min sel=1 all=1 hi-lr  #w cell_s"
    lines = [f"variant       seeds   gain    SD | finetune: {side} | scratch: {side}"]
    for r in rows:
        gain = f"{100 * r['mean_gain']:+6.1f} {100 * r['sd_gain']:5.1f}"
        lines.append(
            f"{r['variant']:<13} {r['seeds']:>5} {gain} | {' ' * 9} {_side(r['finetune'])}"
            f" | {' ' * 8} {_side(r['scratch'])}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("/tmp/selection_noise"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant here
    parser.add_argument("--table", action="store_true", help="only print the saved summaries")
    args = parser.parse_args()
    if args.one:
        summary = run_variant(args.one, args.seeds, args.max_epochs, args.out / args.one)
        (args.out / f"{args.one}.json").write_text(json.dumps(summary, indent=1))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in args.variants:
        if args.table:
            rows.append(json.loads((args.out / f"{variant}.json").read_text()))
            continue
        cmd = [sys.executable, __file__, "--one", variant, "--seeds", str(args.seeds),
               "--max-epochs", str(args.max_epochs), "--out", str(args.out)]  # fmt: skip
        subprocess.run(cmd, check=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
        rows.append(json.loads((args.out / f"{variant}.json").read_text()))
    print(table(rows))
    for r in rows:
        print(r["variant"], "per-seed gains:", r["gains"])
        print("  finetune winners:", r["finetune"]["winners"])


if __name__ == "__main__":
    main()
