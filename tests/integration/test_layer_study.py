"""The layer study end to end: a ``cka: true`` sweep stores CKA artifacts, the report shows them,
a re-run reuses them, and ``atlbench cka`` reproduces them from the kept checkpoints."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import atlbench._layer_study as layer_study
from atlbench._runner import Worker
from atlbench.artifacts import CkaArtifact
from atlbench.plan import CkaTask, build_plan
from atlbench.similarity import auto_layers
from atlbench.store import Store
from atlbench.study import parse_study
from atlbench.sweep import SweepOptions, run_sweep

SUITE: dict[str, Any] = {
    "name": "layer-study",
    "seeds": [0],
    "device": "cpu",
    "cka": True,
    "sources": [
        {"id": "zoo", "zoo": {"arch": "test_resnet", "epochs": 1,
                              "pretrain_on": {"task": "digits", "classes": [0, 1, 2]}}},
    ],
    "targets": [{"id": "d567", "builtin": {"task": "digits", "classes": [5, 6, 7]}}],
    "strategies": ["finetune", "scratch"],
    "budgets": [{"per_class": 4}],
    "training": {"max_epochs": 2, "patience": 2, "trials": 2, "min_epoch_samples": 64},
}  # fmt: skip


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("layer-study")
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    options = SweepOptions(
        results_root=root / "results", reports_root=root / "reports", quiet=True, device="cpu"
    )
    summary = run_sweep(path, options)
    assert not summary.failed, summary.failed
    with Store(summary.results_dir) as store:
        records = store.records().to_dict("records")
        artifacts = store.artifacts("cka")
    return {"root": root, "suite_path": path, "options": options, "summary": summary,
            "records": records, "artifacts": artifacts}  # fmt: skip


def _by_kind(artifacts: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [a for a in artifacts if a["kind"] == kind]
    assert len(found) == 1, [a["kind"] for a in artifacts]
    return found[0]


def _record(records: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
    return next(r for r in records if r["strategy"] == strategy)


def _encoders() -> tuple[Any, Any]:
    source = parse_study(SUITE).source("zoo")
    return source.build(True), source.build(False)


def _layer_outputs(model: torch.nn.Module, names: list[str], x: torch.Tensor) -> list[np.ndarray]:
    """Plain forward hooks that clone each named module's output, flattened to float64."""
    modules = dict(model.named_modules())
    got: dict[str, torch.Tensor] = {}
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, out, n=n: got.__setitem__(n, out.clone()))
        for n in names
    ]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return [got[n].flatten(1).double().numpy() for n in names]


def _linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019), eq. for linear CKA on centred features, via the Gram matrices."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    kx, ky = x @ x.T, y @ y.T
    return float((kx * ky).sum() / np.sqrt((kx * kx).sum() * (ky * ky).sum()))


def test_cka_does_not_change_cell_keys() -> None:
    with_cka = {c.key for c in build_plan(parse_study(SUITE)).cells}
    without = {c.key for c in build_plan(parse_study(SUITE | {"cka": False})).cells}
    assert with_cka == without


def test_sweep_stores_both_comparisons(swept: dict[str, Any]) -> None:
    records, artifacts = swept["records"], swept["artifacts"]
    assert len(artifacts) == 2
    ft, scratch = _record(records, "finetune"), _record(records, "scratch")
    # the suite never asked for checkpoints: cka: true kept them
    assert Path(ft["checkpoint"]).exists() and Path(scratch["checkpoint"]).exists()
    pre, _ = _encoders()
    n_layers = len(auto_layers(pre.model))
    assert n_layers >= 3
    test_size = len(parse_study(SUITE).target("d567").load().test)
    for kind in ("pre_vs_finetuned", "finetuned_vs_scratch"):
        art = _by_kind(artifacts, kind)
        matrix = np.asarray(art["matrix"], dtype=float)
        assert matrix.shape == (n_layers, n_layers)
        assert art["rows"] == art["cols"] == auto_layers(pre.model)
        assert np.isfinite(matrix).all()
        assert matrix.min() >= -1e-9 and matrix.max() <= 1 + 1e-9
        assert (art["target"], art["strategy"], art["budget"], art["seed"]) == (
            "d567",
            "finetune",
            "4/class",
            0,
        )
        assert art["n_examples"] == min(test_size, layer_study.MAX_EXAMPLES)


def test_one_value_matches_independent_recomputation(swept: dict[str, Any]) -> None:
    art = _by_kind(swept["artifacts"], "pre_vs_finetuned")
    pre, _ = _encoders()
    finetuned, _ = _encoders()
    finetuned.load_state_dict(load_file(_record(swept["records"], "finetune")["checkpoint"]))
    split = parse_study(SUITE).target("d567").load().test
    assert art["n_examples"] == len(split)  # small split: every example, one batch
    x = pre.prepare(split.inputs)
    names = art["rows"]
    fa = _layer_outputs(pre.model, names, x)
    fb = _layer_outputs(finetuned.model, names, x)
    matrix = np.asarray(art["matrix"])
    for i, j in ((0, 0), (len(names) - 1, len(names) - 1), (1, len(names) - 1)):
        assert matrix[i, j] == pytest.approx(_linear_cka(fa[i], fb[j]), rel=1e-6, abs=1e-9)
    # fine-tuning moved the model: not every layer is identical to its pre-trained self
    assert np.diag(matrix).min() < 1 - 1e-6


def test_report_shows_cka(swept: dict[str, Any]) -> None:
    html = Path(swept["summary"].report_path).read_text()
    section = html.split('id="cka"', 1)[1].split("</section>", 1)[0]
    # the per-layer change curve plus one heatmap per comparison
    assert section.count('alt="cka"') == 3
    assert "No CKA comparisons recorded" not in section


def test_rerun_reuses_stored_artifacts(swept: dict[str, Any], monkeypatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(layer_study, "compute_cka", lambda *a, **k: calls.append(a))
    summary = run_sweep(swept["suite_path"], swept["options"])
    assert summary.ran == 0 and not calls
    assert summary.artifacts.existing >= 2 and not summary.artifacts.computed
    with Store(summary.results_dir) as store:
        again = store.artifacts("cka")
    assert sorted(a["key"] for a in again) == sorted(a["key"] for a in swept["artifacts"])


def test_each_checkpoint_is_loaded_once(swept: dict[str, Any], monkeypatch) -> None:
    loads: list[str] = []
    real = layer_study.load_encoder_checkpoint

    def counting(encoder: Any, path: Any) -> Any:
        loads.append(str(path))
        return real(encoder, path)

    monkeypatch.setattr(layer_study, "load_encoder_checkpoint", counting)
    study = parse_study(SUITE)
    results_dir = swept["summary"].results_dir
    records = {r["key"]: r for r in swept["records"]}
    tasks = [t for t in build_plan(study).artifacts if isinstance(t, CkaTask)]
    assert [t.kind for t in tasks] == ["pre_vs_finetuned", "finetuned_vs_scratch"]
    attached = [layer_study.attach_checkpoints(t, records, results_dir) for t in tasks]
    assert all(isinstance(t, CkaTask) for t in attached)
    # one worker runs both tasks of the cell, as the sweep's local executor does
    worker = Worker(study, torch.device("cpu"))
    results = [worker.run_task(t) for t in attached if isinstance(t, CkaTask)]
    assert all(isinstance(r, CkaArtifact) for r in results), results
    stored = {a["key"]: a for a in swept["artifacts"]}
    for result in results:  # the worker reproduces what the sweep stored
        assert isinstance(result, CkaArtifact)
        got, want = result.payload(), stored[result.key]
        np.testing.assert_allclose(got.pop("matrix"), want.pop("matrix"), rtol=1e-6, atol=1e-9)
        assert got == want
    ft, scratch = _record(swept["records"], "finetune"), _record(swept["records"], "scratch")
    # two comparisons use the fine-tuned model, but it is read from disk once
    assert sorted(loads) == sorted([ft["checkpoint"], scratch["checkpoint"]])


def _read_matrix(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    with open(path) as f:
        rows = list(csv.reader(f))
    cols = rows[0][1:]
    return [r[0] for r in rows[1:]], cols, np.array([[float(v) for v in r[1:]] for r in rows[1:]])


@pytest.mark.slow  # a second interpreter (torch + timm import) on top of the sweep
def test_cli_writes_csv_and_svg_matching_the_sweep(swept: dict[str, Any]) -> None:
    root, records = swept["root"], swept["records"]
    out = root / "cli-out"
    proc = subprocess.run(
        [sys.executable, "-m", "atlbench.cli", "cka", str(swept["suite_path"]),
         "--a", "zoo", "--a-checkpoint", _record(records, "finetune")["checkpoint"],
         "--b", "scratch", "--b-checkpoint", _record(records, "scratch")["checkpoint"],
         "--target", "d567", "--max-examples", "1000", "--out", str(out)],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows, cols, matrix = _read_matrix(out / "cka.csv")
    art = _by_kind(swept["artifacts"], "finetuned_vs_scratch")
    assert rows == art["rows"] and cols == art["cols"]
    np.testing.assert_allclose(matrix, np.asarray(art["matrix"]), rtol=1e-5, atol=1e-6)
    svg = (out / "cka.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for name in rows:  # the diagonal table names every layer
        assert name in proc.stdout


def test_cli_rejects_unknown_source(swept: dict[str, Any], capsys) -> None:
    from atlbench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["cka", str(swept["suite_path"]), "--a", "nope", "--b", "scratch",
              "--target", "d567", "--out", str(swept["root"] / "x")])  # fmt: skip
    assert exit_info.value.code == 2
    assert "no source 'nope'" in capsys.readouterr().err
