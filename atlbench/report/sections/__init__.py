"""The report's sections, one registered class per module (importing this registers them).

A section is a :class:`Section` subclass registered with
:func:`atlbench.registry.register_report_section`; the page, the CSVs beside the store and
:class:`atlbench.report._views.Views` read the registry. A plug-in adds a section the same way
from its own module::

    @register_report_section("my-table", order=85)
    class MyTable(Section):
        title = "My table"
        csv = "my_table"
        table = Table({"source": "Source", "test_acc": "Accuracy"})

        def data(self, views):
            return views.records[views.records["strategy"] == "mine"]
"""

from atlbench.report.sections import (
    cka,
    domain_gap,
    efficiency,
    environment,
    estimators,
    failure_modes,
    failures,
    forgetting,
    gain_per_hour,
    label_mapping,
    labels_saved,
    leaderboard,
    negative_transfer,
    overfitting,
    seed_rounds,
    sources,
    stability,
    summary,
    timing,
)
from atlbench.report.sections._base import Section, Table, children, ordered

BUILTIN_MODULES = (
    summary,
    leaderboard,
    negative_transfer,
    seed_rounds,
    failure_modes,
    forgetting,
    overfitting,
    label_mapping,
    efficiency,
    labels_saved,
    gain_per_hour,
    domain_gap,
    estimators,
    stability,
    cka,
    timing,
    failures,
    environment,
    sources,
)

__all__ = ["BUILTIN_MODULES", "Section", "Table", "children", "ordered"]
