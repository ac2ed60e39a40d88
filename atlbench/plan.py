"""Grid expansion: suite -> cells with stable content-hash keys.

A key hashes everything that determines a cell's result (source weights, target content, strategy
and its parameters and version, training budget, label budget, seed), not the ids a suite gives
them: renaming a source reuses its results, and two sources of the same architecture share one
scratch baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atlbench.cache import content_hash
from atlbench.sources import Source, resolve_source
from atlbench.strategies import STRATEGIES, strategy_params
from atlbench.suite import BudgetSpec, StrategyEntry, Suite
from atlbench.targets import target_fingerprint, target_modality

METHOD_VERSION = 1  # bump when a change in atlbench would change every result


@dataclass(frozen=True)
class Cell:
    """One (source, target, strategy, budget, seed) unit of work."""

    key: str
    source: str  # the source id, or "<arch> (random init)" for scratch cells
    source_id: str  # a suite source that can build this cell's architecture
    target: str
    strategy: str
    strategy_name: str
    budget: BudgetSpec
    seed: int
    arch: str

    @property
    def label(self) -> str:
        budget = self.budget.label
        return f"{self.source} -> {self.target} / {self.strategy} / {budget} / seed {self.seed}"


@dataclass(frozen=True)
class EstimateTask:
    """Estimator scores for one (source, target) pair, all from the same cached features."""

    key: str
    source: str
    target: str
    estimators: tuple[str, ...]


@dataclass
class Plan:
    cells: list[Cell]
    estimates: list[EstimateTask]
    skipped: list[str] = field(default_factory=list)  # incompatible pairs, said out loud
    sources: dict[str, Source] = field(default_factory=dict)


def scratch_label(arch: str) -> str:
    return f"{arch.split(':', 1)[-1].split('@', 1)[0]} (random init)"


def build_plan(suite: Suite) -> Plan:
    """Expand the suite grid; cells are ordered target -> source -> strategy for cache reuse."""
    sources = {s.id: resolve_source(s, suite.trust_remote_code) for s in suite.sources}
    cells: dict[str, Cell] = {}
    estimates: list[EstimateTask] = []
    skipped: list[str] = []
    for target in suite.targets:
        t_fp = target_fingerprint(target)
        t_modality = target_modality(target)
        for source in sources.values():
            if source.modality != t_modality:
                skipped.append(
                    f"{source.id} x {target.id}: a {source.modality} model cannot read "
                    f"{t_modality} data"
                )
                continue
            for strategy in suite.strategies:
                related = _related_targets(suite, source, target.id, strategy, skipped)
                if related is None:
                    continue
                for budget in suite.budgets:
                    for seed in suite.seeds:
                        cell = _make_cell(
                            suite, source, target.id, t_fp, strategy, budget, seed, related
                        )
                        cells.setdefault(cell.key, cell)
            if suite.estimators:
                key = content_hash(
                    {"source": source.fingerprint, "target": t_fp, "method": METHOD_VERSION}
                )
                estimates.append(EstimateTask(key, source.id, target.id, tuple(suite.estimators)))
    return Plan(list(cells.values()), estimates, skipped, sources)


def _related_targets(
    suite: Suite, source: Source, target_id: str, strategy: StrategyEntry, skipped: list[str]
) -> list[dict[str, Any]] | None:
    """Fingerprints of the other targets a grouped strategy trains on; None: not this target."""
    group = STRATEGIES.get(strategy.name).target_group(strategy_params(strategy))
    if not group:
        return []
    if target_id not in group:
        return None  # the strategy is defined for its group only; nothing to say per pair
    out = []
    for other in group:
        if other == target_id:
            continue
        entry = suite.target(other)
        modality = target_modality(entry)
        if modality != source.modality:
            skipped.append(
                f"{source.id} x {target_id} / {strategy.label}: a {source.modality} model cannot"
                f" read {modality} data of group member {other}"
            )
            return None
        out.append({"id": other, "target": target_fingerprint(entry)})
    return out


def _make_cell(
    suite: Suite,
    source: Source,
    target_id: str,
    target_fp: dict[str, Any],
    strategy: StrategyEntry,
    budget: BudgetSpec,
    seed: int,
    related: list[dict[str, Any]],
) -> Cell:
    cls = STRATEGIES.get(strategy.name)
    params = strategy_params(strategy)
    identity: dict[str, Any] = {
        "source": source.fingerprint if cls.pretrained else {"arch": source.arch},
        "target": target_fp,
        "strategy": {"name": strategy.name, "params": params.model_dump(), "version": cls.version},
        "budget": budget.model_dump(),
        "seed": seed,
        "method": METHOD_VERSION,
    }
    if related:  # what the other group members hold changes this cell's result
        identity["related"] = related
    if not cls.uses_features:
        # how results are kept does not change them: checkpoints stay out of the key
        identity["training"] = suite.training.model_dump(exclude={"keep_checkpoints"})
    return Cell(
        key=content_hash(identity, 20),
        source=source.id if cls.pretrained else scratch_label(source.arch),
        source_id=source.id,
        target=target_id,
        strategy=strategy.label,
        strategy_name=strategy.name,
        budget=budget,
        seed=seed,
        arch=source.arch,
    )
