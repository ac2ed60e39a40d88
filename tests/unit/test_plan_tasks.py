"""Every unit of work is a task of the plan: CKA comparisons, domain gaps and label mappings are
planned with content keys beside the cells, found in the committed stores, skipped once stored,
and written in plan order whatever order an executor returns them in."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_suite

from atlbench._cache import content_hash
from atlbench.artifacts import (
    DomainGapArtifact,
    GapMeasure,
    LabelMappingArtifact,
    TaskSkipped,
    cka_key,
    gap_key,
    mapping_key,
)
from atlbench.executors._remote import failure_result
from atlbench.plan import (
    FT_VS_SCRATCH,
    PRE_VS_FT,
    CkaTask,
    DomainGapTask,
    LabelMappingTask,
    Task,
    build_plan,
)
from atlbench.store import Store
from atlbench.study import Study, load_study, parse_study
from atlbench.sweep import run_artifact_tasks

ROOT = Path(__file__).resolve().parents[2]


def _study(**changes: Any) -> Study:
    return parse_study(tiny_suite(cka=True, **changes))


def _by_type(tasks: Sequence[Any], kind: type) -> list[Any]:
    return [t for t in tasks if isinstance(t, kind)]


def test_plan_holds_every_kind_with_content_keys() -> None:
    study = _study()
    plan = build_plan(study)
    cka = _by_type(plan.artifacts, CkaTask)
    gaps = _by_type(plan.artifacts, DomainGapTask)
    maps = _by_type(plan.artifacts, LabelMappingTask)
    assert len(plan.artifacts) == len(cka) + len(gaps) + len(maps)
    finetune = next(c for c in plan.cells if c.strategy == "finetune")
    scratch = next(c for c in plan.cells if c.strategy == "scratch")
    # a CKA task needs the cells whose checkpoints it reads
    assert [(t.kind, t.needs) for t in cka] == [
        (PRE_VS_FT, (finetune.key,)),
        (FT_VS_SCRATCH, (finetune.key, scratch.key)),
    ]
    source = study.source("zoo-digits")
    source_key = content_hash(source.fingerprint, 20)
    # the keys a store already holds: today's artifact keys, by their original recipes
    assert cka[0].key == cka_key(source_key, finetune.key, PRE_VS_FT)
    assert cka[1].key == cka_key(finetune.key, scratch.key, FT_VS_SCRATCH)
    assert [(t.source, t.target, t.needs) for t in gaps] == [("zoo-digits", "d56", ())]
    assert gaps[0].key == gap_key(source.fingerprint, study.target("d56").fingerprint)
    assert [(t.source, t.target) for t in maps] == [("zoo-digits", "d56")]
    assert maps[0].key == mapping_key(source.fingerprint, study.target("d56").fingerprint)
    assert len({t.key for t in plan.artifacts}) == len(plan.artifacts)


def test_keys_are_stable_and_follow_content_not_ids() -> None:
    keys = [t.key for t in build_plan(_study()).artifacts]
    assert keys == [t.key for t in build_plan(_study()).artifacts]
    renamed = tiny_suite(cka=True)
    renamed["sources"][0]["id"] = "renamed"
    moved = build_plan(parse_study(renamed)).artifacts
    assert [t.key for t in moved] == keys
    assert {getattr(t, "source", "renamed") for t in moved} == {"renamed"}
    # without cka: true there is nothing to compare; the other kinds stay
    plain = build_plan(parse_study(tiny_suite())).artifacts
    assert [t.key for t in plain] == keys[2:]


def test_quickstart_keys_are_the_stored_ones() -> None:
    """Known answers: the keys under which the quickstart's store holds these artifacts."""
    plan = build_plan(load_study(ROOT / "suites" / "quickstart.yaml"))
    cka = _by_type(plan.artifacts, CkaTask)
    assert [(t.kind, t.key) for t in cka[:2]] == [
        (PRE_VS_FT, "69fce70f854b314ddaf5"),
        (FT_VS_SCRATCH, "0e3e72a3e3065212e358"),
    ]
    assert cka[0].cell.label == "zoo-digits04 -> digits5-9 / finetune / 5/class / seed 0"
    gaps = [t.key for t in _by_type(plan.artifacts, DomainGapTask)]
    assert gaps[:2] == ["a197156f1ad3bb2c", "efea5e8f2bd0b36e"]
    maps = [t.key for t in _by_type(plan.artifacts, LabelMappingTask)]
    assert maps[:2] == ["1bdc87107b727fe7", "36da056ac2b6accd"]


def test_quickstart_store_artifacts_are_found(tmp_path: Path) -> None:
    """Where the quickstart's store is at hand (it is not committed, its CSVs are), every
    artifact the plan asks for is in it: nothing there is recomputed."""
    stored = ROOT / "results" / "quickstart" / Store.FILENAME
    if not stored.exists():
        pytest.skip("no quickstart store here (run the quickstart to make one)")
    plan = build_plan(load_study(ROOT / "suites" / "quickstart.yaml"))
    shutil.copy(stored, tmp_path / Store.FILENAME)  # never open the original: WAL files
    with Store(tmp_path) as store:
        cka = {a["key"] for a in store.artifacts("cka")}
        gap_keys = store.meta("domain_gap_keys")
        mapping_keys = store.meta("label_mapping_keys")
    assert {t.key for t in _by_type(plan.artifacts, CkaTask)} == cka and len(cka) == 72
    assert [t.key for t in _by_type(plan.artifacts, DomainGapTask)] == gap_keys
    assert [t.key for t in _by_type(plan.artifacts, LabelMappingTask)] == mapping_keys


class FakeExecutor:
    """Counts what it is asked to run; answers in reverse order, as a pool might."""

    def __init__(self) -> None:
        self.ran: list[Task] = []

    def run(self, study: Study, tasks: Sequence[Task], on_result: Any, on_progress: Any,
            checkpoint_root: Path | None = None) -> None:  # fmt: skip
        self.ran += tasks
        for task in reversed(tasks):
            on_result(task, _fake_result(task))


def _fake_result(task: Task) -> Any:
    if isinstance(task, DomainGapTask):
        measure = GapMeasure(mmd=0.5, mmd_p=0.01, frechet=2.0, n_source=10, n_target=12)
        return DomainGapArtifact(task.key, task.source, task.target, "test", measure, measure)
    assert isinstance(task, LabelMappingTask)
    return LabelMappingArtifact(
        task.key, task.source, task.target, classes=[0, 1], class_names=["a", "b"],
        matrix=[[1.0, 0.0], [0.0, 1.0]], top=[0, 1], top_p=[1.0, 1.0], n_target_classes=2,
        n_confident=2, n_shared=0, confident_threshold=0.5,
    )  # fmt: skip


def test_stored_artifacts_are_not_recomputed_and_keep_plan_order(tmp_path: Path) -> None:
    suite = tiny_suite(cka=True)
    suite["targets"].append({"id": "d78", "builtin": {"task": "digits", "classes": [7, 8]}})
    study = parse_study(suite)
    tasks = build_plan(study).artifacts
    free = [t for t in tasks if not t.needs]
    assert len(free) == 4  # a gap and a mapping per target
    with Store.create(tmp_path) as store:
        executor = FakeExecutor()
        first = run_artifact_tasks(store, study, tasks, executor, tmp_path)
        assert executor.ran == free and sorted(first.computed) == sorted(t.key for t in free)
        # the CKA tasks wait for cells that never ran: skipped, with the reason
        assert len(first.skipped) == 4 and all("not run" in r for r in first.skipped)
        # written in plan order although the executor answered in reverse
        assert [a["key"] for a in store.artifacts("domain_gap")] == [
            t.key for t in free if isinstance(t, DomainGapTask)
        ]
        before = store.conn.execute("SELECT key, updated_at FROM artifacts").fetchall()
        again = FakeExecutor()
        second = run_artifact_tasks(store, study, tasks, again, tmp_path)
        assert again.ran == [] and second.computed == [] and second.existing == 4
        assert store.conn.execute("SELECT key, updated_at FROM artifacts").fetchall() == before


def test_a_renamed_source_relabels_its_stored_gap(tmp_path: Path) -> None:
    study = _study()
    tasks = _by_type(build_plan(study).artifacts, DomainGapTask)
    renamed = tiny_suite(cka=True)
    renamed["sources"][0]["id"] = "renamed"
    study2 = parse_study(renamed)
    tasks2 = _by_type(build_plan(study2).artifacts, DomainGapTask)
    with Store.create(tmp_path) as store:
        run_artifact_tasks(store, study, tasks, FakeExecutor(), tmp_path)
        executor = FakeExecutor()
        run = run_artifact_tasks(store, study2, tasks2, executor, tmp_path)
        assert executor.ran == [] and run.existing == 1
        assert [a["source"] for a in store.artifacts("domain_gap")] == ["renamed"]


def test_a_lost_artifact_task_is_skipped_not_stored() -> None:
    task = _by_type(build_plan(_study()).artifacts, CkaTask)[0]
    result = failure_result(task, "tiny", RuntimeError("node lost\nmore"))
    assert result == TaskSkipped(f"{task.label}: RuntimeError: node lost", error=True)
