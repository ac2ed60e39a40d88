"""``atlbench recommend`` on a synthetic store whose truth follows a known linear model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_suite
from scipy import stats as sps

from atlbench.cli import main
from atlbench.recommend import (
    MODEL,
    beats_history,
    fit_selection_model,
    loto_validation,
    pooled_quantile,
    predict_target,
    validation_summary,
    verdict,
)
from atlbench.record import CellRecord
from atlbench.store import Store

BUDGET = "5/class"
SEEDS = (0, 1)
TRUE_A, TRUE_B = 0.08, 0.05  # accuracy per standard deviation of each estimator's signal
KEYS = ["source", "target", "budget", "seed"]
REGISTERED = ("logme", "hscore")  # names `recommend` can ask `rank_sources` for


def standard(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


def target_scores(
    rng: np.random.Generator,
    target: str,
    sources: list[str],
    seed: int,
    signal: np.ndarray,
    names: tuple[str, str] = ("est_a", "est_b"),
) -> list[tuple]:
    """Two estimators that each see one signal, on a target-specific affine scale, plus noise."""
    (u1, u2), n = signal, len(sources)
    scale = rng.uniform([-5, 0.5, -1, 0.1], [5, 20, 1, 3])
    e1 = scale[0] + scale[1] * (u1 + rng.normal(0, 0.03, n))
    e2 = scale[2] + scale[3] * (u2 + rng.normal(0, 0.03, n))
    a, b = names
    rows = [(src, target, BUDGET, seed, a, e1[i]) for i, src in enumerate(sources)]
    return rows + [(src, target, BUDGET, seed, b, e2[i]) for i, src in enumerate(sources)]


def synthetic(
    n_targets: int = 10,
    n_sources: int = 10,
    seed: int = 0,
    names: tuple[str, str] = ("est_a", "est_b"),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``truth = level_t + 0.08 z_a + 0.05 z_b + noise``: z_a, z_b the signals each estimator
    measures, standardised within the target; level_t a target's difficulty."""
    rng = np.random.default_rng(seed)
    sources = [f"s{i:02d}" for i in range(n_sources)]
    params = rng.uniform(1e6, 1e8, n_sources)
    est, tru = [], []
    for t in range(n_targets):
        target = f"t{t:02d}"
        signal = np.stack([standard(rng.normal(size=n_sources)) for _ in range(2)])
        acc = 0.6 + rng.normal(0, 0.01) + TRUE_A * signal[0] + TRUE_B * signal[1]
        acc = acc + rng.normal(0, 0.005, n_sources)
        for s in SEEDS:
            est += target_scores(rng, target, sources, s, signal, names)
            est += [(src, target, BUDGET, s, "baseline_params", params[i])
                    for i, src in enumerate(sources)]  # fmt: skip
            y = acc + rng.normal(0, 0.003, n_sources)
            tru += [(src, target, BUDGET, s, "finetune", y[i]) for i, src in enumerate(sources)]
    estimates = pd.DataFrame(est, columns=[*KEYS, "estimator", "score"])
    truth = pd.DataFrame(tru, columns=[*KEYS, "strategy", "truth"])
    return estimates.assign(time_s=0.01, set_level=False), truth


def test_recovers_the_generating_model_on_held_out_targets() -> None:
    estimates, truth = synthetic()
    per_target = loto_validation(estimates, truth, BUDGET, level=0.9)
    summary = validation_summary(per_target).set_index("method")
    model, a, b = (summary.loc[m, "mean_tau"] for m in (MODEL, "est_a", "est_b"))
    assert model > 0.95, summary
    assert model > max(a, b) + 0.2  # each estimator alone sees half of the signal
    assert summary.loc[MODEL, "n_targets"] == 10
    assert {"baseline_history", "baseline_params"} <= set(summary.index)
    # the intervals of held-out targets (from refits inside the other targets) hold the truth at
    # about the stated rate; CDF pooling is asymptotic in the targets, so a little under 0.9
    assert 0.8 <= summary.loc[MODEL, "coverage"] <= 0.97
    assert "the model wins" in verdict(summary.reset_index(), BUDGET)
    # the fitted weights are in the generating ratio; history carries no signal here
    fitted = fit_selection_model(estimates, truth, BUDGET)
    assert fitted.estimators == ("est_a", "est_b")
    coef_a, coef_b, coef_h = fitted.coef
    assert coef_a / coef_b == pytest.approx(TRUE_A / TRUE_B, rel=0.15)
    assert abs(coef_h) < 0.01


def test_predicts_a_new_target_in_the_true_order() -> None:
    estimates, truth = synthetic()
    model = fit_selection_model(estimates, truth, BUDGET)
    rng = np.random.default_rng(7)
    sources = [f"s{i:02d}" for i in range(10)]
    signal = np.stack([standard(rng.normal(size=10)) for _ in range(2)])
    scores = pd.DataFrame(
        target_scores(rng, "new", sources, 0, signal), columns=[*KEYS, "estimator", "score"]
    )
    table = predict_target(model, scores[["source", "estimator", "score"]], truth, "new")
    assert list(table["rank"]) == list(range(1, 11))
    truth_new = dict(zip(sources, TRUE_A * signal[0] + TRUE_B * signal[1], strict=True))
    tau = sps.weightedtau(table["predicted"], table["source"].map(truth_new)).statistic
    assert tau > 0.9
    assert (table["high"] - table["low"]).nunique() == 1 and np.isfinite(table["high"]).all()
    assert {"history", "est_a", "z_est_a", "est_b", "z_est_b"} <= set(table.columns)


def difficulty_panel(seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Target difficulty varies far more than model quality, as in real tables (SFDA's 11 x 11:
    SD of target means 10 points, within a target 3): ``acc = level_t + 0.02 q_s + 0.012 u_ts
    + noise``, levels ~ N(0.78, 0.12) clipped into [0.4, 0.97]; q_s a model's quality (the same
    on every target, what history sees), u_ts a target-specific part that only the estimator
    ``est_a`` sees (through noise, on a target-specific scale)."""
    rng = np.random.default_rng(seed)
    n_targets, sources = 12, [f"s{i:02d}" for i in range(10)]
    quality = standard(rng.normal(size=len(sources)))
    levels = np.clip(rng.normal(0.78, 0.12, n_targets), 0.4, 0.97)
    est, tru = [], []
    for t, level in enumerate(levels):
        specific = standard(rng.normal(size=len(sources)))
        acc = level + 0.02 * quality + 0.012 * specific + rng.normal(0, 0.003, len(sources))
        score = rng.uniform(0.5, 5) * (specific + 0.3 * quality + rng.normal(0, 0.3, len(sources)))
        for i, src in enumerate(sources):
            est.append((src, f"t{t:02d}", BUDGET, 0, "est_a", score[i] + rng.uniform(-9, 9)))
            tru.append((src, f"t{t:02d}", BUDGET, 0, "finetune", acc[i]))
    estimates = pd.DataFrame(est, columns=[*KEYS, "estimator", "score"])
    return estimates.assign(time_s=0.0, set_level=False), pd.DataFrame(
        tru, columns=[*KEYS, "strategy", "truth"]
    )


def test_ranks_within_targets_when_difficulty_dominates() -> None:
    estimates, truth = difficulty_panel()
    means = truth.groupby("target")["truth"].mean()
    within = truth.groupby("target")["truth"].std().mean()
    assert means.std() > 3 * within  # the regime where a pooled regression ranks backwards
    summary = validation_summary(loto_validation(estimates, truth, BUDGET)).set_index("method")
    model, history = summary.loc[MODEL, "mean_tau"], summary.loc["baseline_history", "mean_tau"]
    assert model >= history - 5e-4 and model > 0.6, summary
    assert beats_history(summary.reset_index())
    assert summary.loc[MODEL, "min_tau"] > 0  # no held-out target ranked backwards
    fitted = fit_selection_model(estimates, truth, BUDGET)
    assert fitted.estimators == ("est_a",) and min(fitted.coef) > 0
    # a new target: its own level is unknown, the interval says so, and stays inside [0, 1]
    rng = np.random.default_rng(11)
    sources = sorted(truth["source"].unique())
    new = pd.DataFrame({"source": sources, "estimator": "est_a", "score": rng.normal(size=10)})
    table = predict_target(fitted, new, truth, "new")
    assert table["rank"].tolist() == list(range(1, 11))
    assert (table["low"] >= 0).all() and (table["high"] <= 1).all()
    assert table["predicted"].between(table["low"], table["high"]).all()
    assert summary.loc[MODEL, "coverage"] >= 0.75


def test_history_alone_ranks_as_the_history_baseline() -> None:
    """Without estimators the model is relative history: on a complete panel it orders every
    held-out target exactly as the history baseline, float ties included."""
    estimates, truth = difficulty_panel(seed=5)
    per = loto_validation(estimates, truth, BUDGET, estimators=[])
    wide = per.pivot(index="target", columns="method", values="weighted_tau")
    np.testing.assert_allclose(wide[MODEL], wide["baseline_history"])


def test_pooled_quantile_weights_targets_equally() -> None:
    # 1 residual on one target, 9 on the other: the lone one holds half the weight
    assert pooled_quantile([np.array([1.0]), np.full(9, 0.1)], 0.5) == pytest.approx(0.1)
    assert pooled_quantile([np.array([1.0]), np.full(9, 0.1)], 0.6) == pytest.approx(1.0)
    assert pooled_quantile([np.array([0.3, -0.2])], 0.9) == np.inf  # one target: no spread


# -- through a real store and the CLI -------------------------------------------------------------


def write_store(directory: Path, estimates: pd.DataFrame, truth: pd.DataFrame) -> None:
    """A store as a sweep leaves it: plan and cells, estimate rows keyed by task, and the meta
    ``Views.from_store`` reads (estimate_labels, source_keys, suite)."""
    with Store.create(directory) as store:
        cells = []
        for r in truth.itertuples(index=False):
            cell = {"key": f"{r.source}|{r.target}|{r.seed}", "source": r.source,
                    "source_id": r.source, "target": r.target, "strategy": "finetune",
                    "strategy_name": "finetune", "role": "transfer", "budget": r.budget,
                    "seed": int(r.seed), "arch": "a"}  # fmt: skip
            cells.append(cell)
            done = {"status": "done", "test_acc": r.truth, "trains_encoder": True}
            store.put_cell(CellRecord.from_row(cell | done))
        store.set_plan(cells)
        labels, rows = {}, []
        for (target, seed), grp in estimates.groupby(["target", "seed"]):
            key = f"est|{target}|{seed}"
            labels[key] = {"target": target, "budget": BUDGET, "seed": int(seed)}
            rows += [{"key": key, "estimator": r.estimator, "source_key": f"k-{r.source}",
                      "source": r.source, "target": target, "budget": BUDGET, "seed": int(seed),
                      "status": "done", "score": float(r.score), "time_s": 0.01}
                     for r in grp.itertuples(index=False)]  # fmt: skip
        store.put_estimates(rows)
        store.set_meta("suite", {"name": "synthetic", "truth": "finetune"})
        store.set_meta("estimate_labels", labels)
        store.set_meta("source_keys", {f"k-{s}": s for s in estimates["source"].unique()})


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recommend")
    estimates, truth = synthetic(n_targets=6, n_sources=8, names=REGISTERED)
    write_store(root / "full", estimates, truth)
    few = truth["target"].isin(["t00", "t01"])
    write_store(root / "few", estimates[estimates["target"].isin(["t00", "t01"])], truth[few])
    suite = root / "suite.yaml"
    suite.write_text(yaml.safe_dump(tiny_suite()))  # target d56; its source is never run here
    return {"full": root / "full", "few": root / "few", "suite": suite}


def fake_ranking(sources: list[str], target: str = "d56") -> pd.DataFrame:
    """What ``rank_sources`` returns, without features: logme in a known order, hscore the same
    for every source (z-score 0), so the predicted order is logme's."""
    rows = []
    for i, src in enumerate(sources):
        for name, score in (("logme", 10.0 - i), ("hscore", 1.0)):
            rows.append({"target": target, "source": src, "estimator": name, "score": score,
                         "time_s": 0.0, "feature_time_s": 0.1, "error": "",
                         "set_level": False})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["rank"] = frame.groupby("estimator")["score"].rank(ascending=False, method="min")
    return frame.astype({"rank": "Int64"})


def run(*args: str) -> int:
    try:
        main(["recommend", *args])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_cli_validates_then_ranks(
    stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = [f"s{i:02d}" for i in range(8)] + ["fresh"]
    calls = []

    def rank_sources(suite, target, estimators=None, device=None):  # type: ignore[no-untyped-def]
        calls.append((target, estimators))
        return fake_ranking(sources, target)

    monkeypatch.setattr("atlbench._estimate.rank_sources", rank_sources)
    code = run(str(stores["full"]), "--suite", str(stores["suite"]), "--target", "d56")
    out = capsys.readouterr().out
    assert code == 0, out
    assert calls == [("d56", sorted(REGISTERED))]
    assert "Leave one target out" in out and "the model wins" in out
    assert "accuracy = " in out and "z(logme)" in out and "z(history)" in out
    assert "Predicted fine-tuned accuracy" in out
    # logme dominates the fitted model, so its order is the predicted order; "fresh" was never
    # fine-tuned anywhere: said in one line, shown by estimator rank only
    table = out[out.index("Predicted fine-tuned accuracy") :]
    positions = [table.index(f" {s} ") for s in sources[:8]]
    assert positions == sorted(positions)
    assert "no fine-tuning history at 5/class for fresh" in out


def test_cli_falls_back_without_enough_history(
    stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        "atlbench._estimate.rank_sources", lambda *a, **k: fake_ranking(["s00", "s01", "s02"])
    )
    code = run(str(stores["few"]), "--suite", str(stores["suite"]), "--target", "d56")
    out = capsys.readouterr().out
    assert code == 0
    assert "not enough history: 2 other target(s)" in out
    assert "Sources ranked for d56" in out and "Leave one target out" not in out


def test_cli_one_line_errors(stores: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    suite = str(stores["suite"])
    assert run(str(stores["full"].parent / "nope"), "--suite", suite, "--target", "d56") == 2
    err = capsys.readouterr().err
    assert "no results store here" in err and len(err.strip().splitlines()) == 1
    assert run(str(stores["full"]), "--suite", suite, "--target", "d57") == 2
    err = capsys.readouterr().err
    assert "no target 'd57'" in err and len(err.strip().splitlines()) == 1
    assert run(str(stores["full"]), "--suite", suite, "--target", "d56", "--budget", "9/class") == 2
    assert "no fine-tuning truths at budget '9/class'" in capsys.readouterr().err
