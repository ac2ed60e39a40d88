"""Grid expansion: a resolved study -> cells with stable content-hash keys.

A key hashes everything that determines a cell's result (source weights, target content, strategy
with its parameters, training settings and search space, the validation protocol, label budget,
seed), not the ids a suite gives them: renaming a source reuses its results, editing a dataset
re-runs exactly the cells that read it, and two sources of the same architecture share one
scratch baseline and one random-init twin per frozen strategy.

Roles: a *transfer* cell adapts a pre-trained source; the *baseline* cell trains the same
architecture from scratch; a *random_init* cell runs a frozen strategy (probe, kNN) on a
randomly initialised encoder of the architecture: the same algorithm without the source, which
negative transfer is measured against (Wang et al. 2019).

Beside the cells the plan holds every other unit of work as a task with a content key: estimator
tasks, CKA comparisons, domain gaps and label mappings. They run through the same executors and
are cached by key like cells. A CKA task reads the checkpoints of the cells it compares, so it
``needs`` them: the driver dispatches it once those cells are done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from atlbench._cache import content_hash
from atlbench.artifacts import CKA, DOMAIN_GAP, LABEL_MAPPING, cka_key, gap_key, mapping_key
from atlbench.budgets import BudgetSpec
from atlbench.record import Role
from atlbench.sources._base import Source
from atlbench.strategies._base import StrategySpec
from atlbench.study import Study

__all__ = [
    "BASELINE",
    "FT_VS_SCRATCH",
    "PRE_VS_FT",
    "RANDOM_INIT",
    "TRANSFER",
    "ArtifactTask",
    "Cell",
    "CkaTask",
    "DomainGapTask",
    "EstimateTask",
    "LabelMappingTask",
    "Plan",
    "Task",
    "build_plan",
]

METHOD_VERSION = 3  # 3: seeded trial design, loss breaks accuracy ties; bump if all change
TRANSFER, BASELINE, RANDOM_INIT = Role.TRANSFER, Role.BASELINE, Role.RANDOM_INIT
PRE_VS_FT, FT_VS_SCRATCH = "pre_vs_finetuned", "finetuned_vs_scratch"  # the CKA comparisons


@dataclass(frozen=True)
class Cell:
    """One (source, target, strategy, budget, seed) unit of work."""

    key: str
    source: str  # the source id, or "<arch> (random init)" for baseline and twin cells
    source_id: str  # a suite source that can build this cell's architecture
    target: str
    strategy: str  # the strategy's suite label
    strategy_name: str
    budget: BudgetSpec
    seed: int
    arch: str
    role: Role = TRANSFER

    @property
    def pretrained(self) -> bool:
        return self.role == TRANSFER

    @property
    def label(self) -> str:
        budget = self.budget.label
        return f"{self.source} -> {self.target} / {self.strategy} / {budget} / seed {self.seed}"


@dataclass(frozen=True)
class EstimateTask:
    """Estimator scores of every source for one target, on one labelled subset.

    In a sweep the subset is a cell's label budget and seed (estimators are judged on the
    labels the prediction is about); ``budget=None`` scores the whole train split
    (``atlbench estimate``).
    """

    key: str
    target: str
    sources: tuple[str, ...]
    estimators: tuple[str, ...]
    budget: BudgetSpec | None = None
    seed: int | None = None


@dataclass(frozen=True)
class CkaTask:
    """Layer-wise CKA of a fine-tuned cell against its pre-trained source (``pre_vs_finetuned``)
    or against the scratch cell of the same architecture, target, budget and seed
    (``finetuned_vs_scratch``).

    ``needs`` are the keys of the cells whose checkpoints it reads; the driver attaches their
    paths (``checkpoints``, in ``needs`` order) once they are done. The key does not depend on
    where the checkpoints are.
    """

    ARTIFACT: ClassVar[str] = CKA

    key: str
    kind: str  # PRE_VS_FT or FT_VS_SCRATCH
    cell: Cell  # the fine-tuned cell
    scratch: Cell | None = None  # the scratch cell of a finetuned_vs_scratch comparison
    needs: tuple[str, ...] = ()
    checkpoints: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.cell.label} ({self.kind})"


@dataclass(frozen=True)
class _PairTask:
    """A task about one (source, target) pair that reads no cell's output."""

    ARTIFACT: ClassVar[str]
    WHAT: ClassVar[str]

    key: str
    source: str  # the source id
    target: str
    needs: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.WHAT} {self.source} -> {self.target}"


@dataclass(frozen=True)
class DomainGapTask(_PairTask):
    """Distance of a target from the data its source was pre-trained on."""

    ARTIFACT: ClassVar[str] = DOMAIN_GAP
    WHAT: ClassVar[str] = "domain gap"


@dataclass(frozen=True)
class LabelMappingTask(_PairTask):
    """Which source classes each target class lands on, for a source with a head."""

    ARTIFACT: ClassVar[str] = LABEL_MAPPING
    WHAT: ClassVar[str] = "label mapping"


ArtifactTask = CkaTask | DomainGapTask | LabelMappingTask
Task = Cell | EstimateTask | ArtifactTask  # anything an executor runs


@dataclass
class Plan:
    cells: list[Cell]
    estimates: list[EstimateTask]
    skipped: list[str] = field(default_factory=list)  # incompatible pairs, said out loud
    artifacts: list[ArtifactTask] = field(default_factory=list)  # in plan order, by kind


def random_init_label(arch: str) -> str:
    """``timm:test_resnet@32`` -> ``test_resnet (random init)``; a truncated HF model keeps its
    depth (``hf:m@main/3`` -> ``m/3 layers (random init)``) so two depths stay two rows."""
    name, _, tail = arch.split(":", 1)[-1].partition("@")
    depth = tail.partition("/")[2]
    return f"{name}{f'/{depth} layers' if depth else ''} (random init)"


def build_plan(study: Study, seeds: Sequence[int] | None = None) -> Plan:
    """Expand the grid; cells are ordered target -> source -> strategy for cache reuse.

    ``seeds`` replaces the suite's first-round seeds (a seed schedule's later rounds,
    :mod:`atlbench._adaptive`): such a plan holds cells only, since estimator, CKA, gap and
    mapping tasks belong to the first round.
    """
    cells: dict[str, Cell] = {}
    estimates: list[EstimateTask] = []
    skipped: list[str] = []
    suite = study.suite
    for target in study.targets.values():
        readers = []
        for source in study.sources.values():
            if source.modality != target.modality:
                skipped.append(
                    f"{source.id} x {target.id}: a {source.modality} model cannot read "
                    f"{target.modality} data"
                )
                continue
            readers.append(source)
            for spec in study.strategies:
                problem = spec.cls.supports(source)
                if problem is not None:
                    note = f"{source.id} / {spec.label}: {problem}"
                    if note not in skipped:
                        skipped.append(note)
                    continue
                related = _related_targets(study, source, target.id, spec, skipped)
                if related is None:
                    continue
                for budget in suite.budgets:
                    for seed in suite.seeds if seeds is None else seeds:
                        for cell in _cells(study, source, target.id, spec, budget, seed, related):
                            cells.setdefault(cell.key, cell)
        if readers and suite.estimators and seeds is None:
            estimates += _estimate_tasks(study, target.id, readers)
    planned = list(cells.values())
    if seeds is not None:
        return Plan(planned, [], skipped)
    artifacts: list[ArtifactTask] = [*_cka_tasks(study, planned), *_gap_tasks(study, planned)]
    artifacts += _mapping_tasks(study, planned)
    return Plan(planned, estimates, skipped, artifacts)


def _cka_tasks(study: Study, cells: list[Cell]) -> list[CkaTask]:
    """With ``cka: true``, two comparisons per fine-tuned cell (a transfer cell whose strategy
    keeps a checkpoint): against its pre-trained source, whose weights its fingerprint
    identifies, and against its scratch twin where the plan has one."""
    if not study.suite.cka:
        return []
    scratch = {(c.arch, c.target, c.budget, c.seed): c for c in cells if c.role == BASELINE}
    out = []
    for cell in cells:
        if cell.role != TRANSFER or not study.strategy(cell.strategy).saves_checkpoint:
            continue
        source_key = content_hash(study.source(cell.source_id).fingerprint, 20)
        key = cka_key(source_key, cell.key, PRE_VS_FT)
        out.append(CkaTask(key, PRE_VS_FT, cell, needs=(cell.key,)))
        twin = scratch.get((cell.arch, cell.target, cell.budget, cell.seed))
        if twin is not None:
            key = cka_key(cell.key, twin.key, FT_VS_SCRATCH)
            out.append(CkaTask(key, FT_VS_SCRATCH, cell, twin, needs=(cell.key, twin.key)))
    return out


def _gap_tasks(study: Study, cells: list[Cell]) -> list[DomainGapTask]:
    """One per (source, target) of the transfer cells whose source knows its own task."""
    out: dict[tuple[str, str], DomainGapTask] = {}
    for cell in cells:
        source = study.source(cell.source_id)
        if not cell.pretrained or (source.pretrain_task is None and source.eval_on is None):
            continue
        if (cell.source_id, cell.target) not in out:
            key = gap_key(source.fingerprint, study.target(cell.target).fingerprint)
            out[cell.source_id, cell.target] = DomainGapTask(key, cell.source_id, cell.target)
    return list(out.values())


def _mapping_tasks(study: Study, cells: list[Cell]) -> list[LabelMappingTask]:
    """One per (source, target) of the transfer cells; a source without a head maps nothing."""
    out: dict[tuple[str, str], LabelMappingTask] = {}
    for cell in cells:
        if cell.pretrained and (cell.source_id, cell.target) not in out:
            source, target = study.source(cell.source_id), study.target(cell.target)
            key = mapping_key(source.fingerprint, target.fingerprint)
            out[cell.source_id, cell.target] = LabelMappingTask(key, cell.source_id, cell.target)
    return list(out.values())


def _estimate_tasks(study: Study, target_id: str, sources: list[Source]) -> list[EstimateTask]:
    suite = study.suite
    out = []
    for budget in suite.budgets:
        for seed in suite.seeds:
            identity = {
                "sources": sorted(content_hash(s.fingerprint) for s in sources),
                "target": _target_content(study, target_id, seed),
                "budget": budget.model_dump(),
                "seed": seed,
                "method": METHOD_VERSION,
            }
            out.append(
                EstimateTask(
                    content_hash(identity),
                    target_id,
                    tuple(s.id for s in sources),
                    tuple(suite.estimators),
                    budget,
                    seed,
                )
            )
    return out


def _target_content(study: Study, target_id: str, seed: int) -> dict[str, Any]:
    target = study.target(target_id)
    return target.content(seed if study.suite.resample_splits else None)


def _related_targets(
    study: Study, source: Source, target_id: str, spec: StrategySpec, skipped: list[str]
) -> list[dict[str, Any]] | None:
    """Fingerprints of the other targets a grouped strategy trains on; None: not this target."""
    if not spec.group:
        return []
    if target_id not in spec.group:
        return None  # the strategy is defined for its group only; nothing to say per pair
    out = []
    for other in spec.group:
        if other == target_id:
            continue
        entry = study.target(other)
        if entry.modality != source.modality:
            skipped.append(
                f"{source.id} x {target_id} / {spec.label}: a {source.modality} model cannot"
                f" read {entry.modality} data of group member {other}"
            )
            return None
        out.append({"id": other, "target": entry.fingerprint})
    return out


def _cells(
    study: Study,
    source: Source,
    target_id: str,
    spec: StrategySpec,
    budget: BudgetSpec,
    seed: int,
    related: list[dict[str, Any]],
) -> list[Cell]:
    """The transfer cell of a (source, strategy) and, where it has one, its random-init twin;
    or the baseline cell of the source's architecture."""
    roles = [BASELINE] if spec.is_baseline else [TRANSFER]
    if spec.has_random_init_twin:
        roles.append(RANDOM_INIT)
    out = []
    for role in roles:
        identity: dict[str, Any] = {
            "source": source.fingerprint if role == TRANSFER else {"arch": source.arch},
            "role": role,
            "target": _target_content(study, target_id, seed),
            "strategy": spec.identity(),
            "protocol": {"validation": study.suite.validation},
            "budget": budget.model_dump(),
            "seed": seed,
            "method": METHOD_VERSION,
        }
        if not spec.trainable:
            identity["protocol"]["cv_folds"] = spec.training.cv_folds
        if related:  # what the other group members hold changes this cell's result
            identity["related"] = related
        out.append(
            Cell(
                key=content_hash(identity, 20),
                source=source.id if role == TRANSFER else random_init_label(source.arch),
                source_id=source.id,
                target=target_id,
                strategy=spec.label,
                strategy_name=spec.name,
                budget=budget,
                seed=seed,
                arch=source.arch,
                role=role,
            )
        )
    return out
