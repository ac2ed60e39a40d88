"""Verdicts with known answers: a random initialisation carries no information about the target,
a source pre-trained on a related task does.

Both are given as ordinary sources (the random one as a checkpoint file, as a user would give
any checkpoint), with the default strategies and the default tuning protocol, at a small budget:
2 labels per class (one to train on and one to validate on, per class and trial). The seeds
follow the default schedule (``seeds: {}``: 3, then 2 more at a time while a comparison is
open, up to 15), so each answer also says how many seeds it needed: run with ``-s`` to print
them.

- The random initialisation, fine-tuned, must not be called significantly different from
  training from scratch (under-tuned fine-tuning called it "negative (significant)" before the
  backbone learning rate was searched). Its *frozen* probe is not asserted: a fixed random
  network is one draw, and draws differ for real (six random test_resnet checkpoints probed at
  2 labels per class over 10 seeds: -11.2 to +4.9 points against a fresh random network per
  seed, two of six significant), so the known answer holds on average over draws, not for each.
- The related source (pre-trained on digits 0-4, target digits 5-9) must be called positive:
  its fine-tuning significantly above the same fine-tuning from a random initialisation (which
  for a trained recipe is scratch training), in both tables. Its linear probe must gain over a
  probe of a random network and never be called worse. Measured here (``-s``): fine-tuning
  +12.9 points [+6.1, +19.7] and the probe +13.3 [+4.7, +22.0], both "positive (significant)"
  after 15 seeds, the random initialisation "not significant" and stopped for futility at 3.
  Both related verdicts are flagged near their threshold (0.9 and 0.3 standard errors from
  their line): they reproduce bit for bit on this kind of CPU, but another CPU's rounding could
  leave them "nominal".
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

SCHEDULE = {}  # the default: {start: 3, step: 2, max: 15}


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    import torch
    from safetensors.torch import save_file

    from atlbench._api import run_suite
    from atlbench.sources.timm import create_timm

    root = tmp_path_factory.mktemp("verdicts")
    torch.manual_seed(1234)
    random_init = create_timm("test_resnet", False, num_classes=0, input_size=32).model
    save_file(
        {k: v.contiguous() for k, v in random_init.state_dict().items()},
        str(root / "r.safetensors"),
    )
    suite = {
        "name": "verdicts",
        "seeds": SCHEDULE,
        "device": "cpu",
        "sources": [
            {"id": "random-init", "checkpoint": {"arch": "test_resnet", "input_size": 32,
                                                 "path": str(root / "r.safetensors")}},
            {"id": "related", "zoo": {"arch": "test_resnet", "epochs": 20, "pretrain_on": {
                "task": "digits", "classes": [0, 1, 2, 3, 4]}}},
        ],
        "targets": [{"id": "digits5-9", "builtin": {"task": "digits", "classes": [5, 6, 7, 8, 9]}}],
        "strategies": ["linear_probe", "finetune", "scratch"],
        "budgets": [{"per_class": 2}],
        "estimators": [],
        "training": {"max_epochs": 10, "patience": 3, "trials": 2, "min_epoch_samples": 64},
    }  # fmt: skip
    (root / "suite.yaml").write_text(yaml.safe_dump(suite))
    views = run_suite(root / "suite.yaml", results_dir=root / "r", reports_dir=root / "rep")
    table = views.negative_transfer
    for row in table.itertuples(index=False):
        print(
            f"{row.source} / {row.strategy} vs {row.comparison}: {row.verdict}, {row.stop}; "
            f"gain {row.gain_mean:+.3f} [{row.gain_ci_low:+.3f}, {row.gain_ci_high:+.3f}], "
            f"{row.threshold_distance:.2f} SE from its line"
        )
    out = table.set_index(["source", "strategy", "comparison"])
    out.attrs["results_dir"] = root / "r" / "verdicts"
    return out


@pytest.mark.parametrize("comparison", ["same_algorithm", "scratch"])
def test_a_random_initialisation_is_no_different_from_scratch(
    verdicts: pd.DataFrame, comparison: str
) -> None:
    row = verdicts.loc[("random-init", "finetune", comparison)]
    assert row["verdict"] in ("not significant", "equivalent"), row.to_dict()
    if row["verdict"] != "equivalent":  # equivalence within the margin closes it too
        assert not str(row["stop"]).startswith("decided"), row.to_dict()
    assert row["n_pairs"] >= 3


def test_a_related_source_helps_at_a_small_budget(verdicts: pd.DataFrame) -> None:
    same = verdicts.loc[("related", "finetune", "same_algorithm")]
    assert same["verdict"] == "positive (significant)", same.to_dict()
    assert str(same["stop"]).startswith("decided"), same.to_dict()
    scratch = verdicts.loc[("related", "finetune", "scratch")]
    assert scratch["verdict"] == "above scratch training (significant)", scratch.to_dict()
    probe = verdicts.loc[("related", "linear_probe", "same_algorithm")]
    assert probe["gain_mean"] > 0, probe.to_dict()
    assert not probe["verdict"].startswith("negative"), probe.to_dict()


def test_the_sweep_summary_counts_decided_and_near_threshold_verdicts(
    verdicts: pd.DataFrame,
) -> None:
    from io import StringIO
    from types import SimpleNamespace

    from rich.console import Console

    from atlbench._ui import SweepUI

    out = StringIO()
    summary = SimpleNamespace(ran=0, failed=[], seconds=1.0, report_path=None, skipped_failed=0,
                              results_dir=verdicts.attrs["results_dir"])  # fmt: skip
    SweepUI(console=Console(file=out, width=300)).print_summary(summary)
    decided = int(verdicts["stop"].astype(str).str.startswith("decided").sum())
    near = int(verdicts["near_threshold"].astype(bool).sum())
    text = " ".join(out.getvalue().split())
    assert f"seed schedule: {decided} of {len(verdicts)} comparisons decided" in text, text
    assert f"{near} verdicts near their threshold" in text, text
