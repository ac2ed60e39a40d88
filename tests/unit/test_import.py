"""``atlbench import``: an external table becomes a store that Views, report and recommend read."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atlbench.cli import main
from atlbench.report._views import Views
from atlbench.store import Store

SOURCES = ("resnet50", "densenet121", "lab-a", "lab-b")  # two hub models, two of a lab's own
TARGETS = ("birds", "cars", "flowers")


def external_table(seed: int = 0) -> pd.DataFrame:
    """A lab's results in percent, two seeds, a LogME column, a custom scorer, parameter counts
    for its own models only, and a free-text column the importer does not know."""
    rng = np.random.default_rng(seed)
    rows = []
    for t, target in enumerate(TARGETS):
        for s, source in enumerate(SOURCES):
            for seed_ in (0, 1):
                rows.append(
                    {
                        "source": source,
                        "target": target,
                        "seed": seed_,
                        "accuracy": round(60 + 10 * t + 3 * s + rng.normal(0, 1), 2),
                        "logme": round(rng.normal(1, 0.1), 4),
                        "score_lab_metric": round(rng.normal(), 4),
                        "params": {"lab-a": 1.5e6, "lab-b": 3e6}.get(source),
                        "notes": "run by hand",
                    }
                )
    return pd.DataFrame(rows)


def run(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_round_trip_through_views_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = external_table()
    path = tmp_path / "lab.csv"
    path.write_text("# our lab's fine-tuning runs, 2025\n" + table.to_csv(index=False))
    store = tmp_path / "results" / "lab"
    assert run("import", str(path), "--into", str(store)) == 0
    out = capsys.readouterr().out
    assert "accuracy read as percent" in out and "not imported: column(s) notes" in out
    assert "params / imagenet_top1 of 2 source(s) taken from the published figures" in out

    with Store(store) as st:
        views = Views.from_store(st)
    # every accuracy comes back unchanged (as a fraction), cell by cell
    truth = views.truth.merge(table, on=["source", "target", "seed"], validate="one_to_one")
    assert len(truth) == len(table) and set(truth["strategy"]) == {"finetune"}
    np.testing.assert_allclose(truth["truth"], truth["accuracy"] / 100, rtol=0, atol=1e-12)
    # scores: the table's own, the custom scorer under its name, metadata as static baselines
    est = views.estimates.pivot_table(
        index=["source", "target", "seed"], columns="estimator", values="score"
    ).reset_index()
    both = est.merge(table, on=["source", "target", "seed"], validate="one_to_one")
    np.testing.assert_array_equal(both["logme_x"], both["logme_y"])
    np.testing.assert_array_equal(both["lab_metric"], both["score_lab_metric"])
    params = both.set_index("source")["baseline_params"].groupby(level=0).first()
    assert params["lab-a"] == 1.5e6 and params["lab-b"] == 3e6
    assert params["resnet50"] == 25_557_032  # torchvision's published count, from the data file
    top1 = both.set_index("source")["baseline_reported_acc"].groupby(level=0).first()
    assert top1["densenet121"] == pytest.approx(74.434) and np.isnan(top1["lab-a"])
    # the leaderboard's seed means are the table's
    board = views.leaderboard.set_index(["target", "source"])["mean_acc"]
    means = table.groupby(["target", "source"])["accuracy"].mean() / 100
    np.testing.assert_allclose(board.sort_index(), means.sort_index(), atol=1e-12)
    # estimator validation runs on it: LogME judged on every target, beside the baselines
    agreement = views.agreement
    assert agreement is not None
    assert {"logme", "lab_metric", "baseline_history"} <= set(agreement["estimator"])

    reports = tmp_path / "reports"
    assert run("report", str(store), "--reports-dir", str(reports)) == 0
    page = (reports / "lab.html").read_text()
    assert "Left out: the records have no trains_encoder, n_train" in page  # negative transfer
    assert "Left out: the records have no cost_s" in page  # timing
    assert "Imported with atlbench import" in page and "our lab&#39;s fine-tuning runs" in page
    assert (store / "leaderboard.csv").is_file() and (store / "estimators.csv").is_file()
    assert "Traceback" not in capsys.readouterr().err


def test_parquet_and_fraction_values(tmp_path: Path) -> None:
    table = external_table(seed=1).drop(columns=["notes"])
    table["accuracy"] = table["accuracy"] / 100
    table = table.rename(columns={"accuracy": "test_acc"}).assign(budget="10/class")
    path = tmp_path / "lab.parquet"
    table.to_parquet(path)
    assert run("import", str(path), "--into", str(tmp_path / "pq")) == 0
    with Store(tmp_path / "pq") as st:
        views = Views.from_store(st)
    assert set(views.truth["budget"]) == {"10/class"}
    merged = views.truth.merge(table, on=["source", "target", "seed"])
    np.testing.assert_allclose(merged["truth"], merged["test_acc"], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop(columns=["accuracy"]), "needs exactly one accuracy column"),
        (lambda t: t.drop(columns=["target"]), "missing column(s) target"),
        (lambda t: t.assign(accuracy=t["accuracy"].astype(object).where(t.index != 3, "high")),
         "column 'accuracy', row 4: 'high' is not a number"),
        (lambda t: t.assign(seed=0), "several rows for the same cell"),
        (lambda t: t.assign(accuracy=t["accuracy"] * 10), "must hold accuracies in [0, 1]"),
        (lambda t: t.assign(params=np.arange(len(t))), "has several params values"),
    ],
)  # fmt: skip
def test_bad_tables_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change, message: str
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.csv"
    change(external_table()).to_csv(path, index=False)
    assert run("import", str(path), "--into", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_refuses_an_existing_store_and_unknown_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lab.csv"
    external_table().to_csv(path, index=False)
    assert run("import", str(path), "--into", str(tmp_path / "s")) == 0
    capsys.readouterr()
    assert run("import", str(path), "--into", str(tmp_path / "s")) == 2
    assert "already holds a results store" in capsys.readouterr().err
    assert run("import", "no-such-table", "--into", str(tmp_path / "t")) == 2
    err = capsys.readouterr().err
    assert "sfda-supervised" in err and len(err.strip().splitlines()) == 1


def test_recommend_offline_without_target_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """History alone needs nothing of the new target: no suite resolution, no features, no hub
    (HF_HUB_OFFLINE is set for every test), and the target's folder does not exist."""
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    store = tmp_path / "sfda"
    assert run("import", "sfda-supervised", "--into", str(store)) == 0
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: new-target\n"
        "sources:\n"
        "  - {id: resnet152, timm: {arch: resnet152.tv_in1k, pretrained: true}}\n"
        "  - {id: mnasnet1_0, timm: {arch: mnasnet_100.rmsp_in1k, pretrained: true}}\n"
        "  - {id: never-measured, timm: {arch: resnet18.tv_in1k, pretrained: true}}\n"
        f"targets:\n  - {{id: plants, folder: {{path: {tmp_path / 'missing'}}}}}\n"
        "strategies: [finetune]\n"
    )

    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("recommend loaded the target or the suite's models")

    monkeypatch.setattr("atlbench._estimate.rank_sources", loaded)
    monkeypatch.setattr("atlbench.study.load_study", loaded)
    capsys.readouterr()
    assert run("recommend", str(store), "--suite", str(suite), "--target", "plants") == 0
    out = capsys.readouterr().out
    assert "plants's data unread" in out and "they tie" in out
    table = out[out.index("Predicted fine-tuned accuracy") :]
    assert table.index(" resnet152 ") < table.index(" mnasnet1_0 ")
    assert "no fine-tuning history at all for never-measured" in out
    # without a suite: every stored source is a candidate, the target only a name
    assert run("recommend", str(store), "--target", "anything") == 0
    out = capsys.readouterr().out
    table = out[out.index("Predicted fine-tuned accuracy") :]
    assert table.index(" resnet152 ") < table.index(" densenet121 ") < table.index(" mnasnet1_0 ")
    bounds = [(float(a), float(b)) for a, b in re.findall(r"\[(\d\.\d+), (\d\.\d+)\]", table)]
    assert len(bounds) == 11 and all(0 <= a <= b <= 1 for a, b in bounds)
