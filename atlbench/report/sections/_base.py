"""The shape of a report section, and the page order of the registered ones.

A section is one class in its own module, registered with
:func:`atlbench.registry.register_report_section`. It says what it computes (``data``), which
CSV that frame is written to (``csv``), which columns its table shows and under which headers
(``table``), its figures, and the plain-words lines it adds to the report's summary (``words``).
The page, the CSV list and :class:`atlbench.report._views.Views` are all read from the registry,
so a plug-in adds a table to every report with one module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pandas as pd
from markupsafe import Markup

from atlbench.registry import REPORT_SECTIONS
from atlbench.report._study import StudyData
from atlbench.report._tables import figures_html, table_html


@dataclass(frozen=True)
class Table:
    """The main columns a section shows, in order, each with its human header.

    The frame's other columns are folded under each row (the CSV keeps every column); ``more``
    gives headers to some of those. ``group_by``: one table per value, each under a heading.
    """

    columns: Mapping[str, str]
    more: Mapping[str, str] = field(default_factory=dict)
    group_by: str | None = None

    def html(self, frame: pd.DataFrame | None) -> Markup:
        headers = {**self.more, **self.columns}
        if self.group_by is None or frame is None or frame.empty:
            return table_html(frame, list(self.columns), headers)
        return Markup("").join(
            Markup("<h3>{}</h3>").format(value) + table_html(part, list(self.columns), headers)
            for value, part in frame.groupby(self.group_by, sort=False)
        )


class Section:
    """One section of the report: data, table, figures and words.

    Class attributes describe it; methods compute from a results directory's
    :class:`~atlbench.report._study.StudyData` (``views``), reading other sections' frames with
    ``views.frame(name)``. ``intro``, ``empty`` and ``missing`` are HTML written here, never
    user data; everything from the records is escaped when rendered.
    """

    name: ClassVar[str] = ""  # the anchor; set by the decorator
    order: ClassVar[float] = 0.0  # place among its siblings; set by the decorator
    title: ClassVar[str] = ""  # its heading ("" for none: a child that only adds figures)
    nav: ClassVar[str] = ""  # a shorter title for the page's navigation (top-level sections)
    parent: ClassVar[str | None] = None  # rendered inside that section, after its content
    intro: ClassVar[str] = ""  # what the table means, above it
    requires: ClassVar[tuple[str, ...]] = ()  # record columns it computes with (else left out)
    csv: ClassVar[str | None] = None  # ``<csv>.csv`` beside the store gets ``csv_frame``
    csv_always: ClassVar[bool] = False  # write it even with no rows (stable, documented columns)
    table: ClassVar[Table | None] = None
    empty: ClassVar[str | None] = None  # said in place of a table without rows
    missing: ClassVar[str | None] = None  # said instead of the whole section when it has nothing
    figures_at: ClassVar[Literal["above", "below", "beside"]] = "below"  # relative to the table
    figure_alt: ClassVar[str | None] = None  # one alt text for every figure (default: its name)
    folded: ClassVar[bool] = False  # a child folded under its title instead of a heading

    def data(self, views: StudyData) -> pd.DataFrame | None:
        """The section's frame: what its CSV holds and, by default, what its table shows."""
        return None

    def shown(self, views: StudyData) -> pd.DataFrame | None:
        """The frame the table shows: ``data`` plus display columns (intervals as text...)."""
        return views.frame(self.name)

    def csv_frame(self, views: StudyData) -> pd.DataFrame | None:
        """What ``<csv>.csv`` holds: ``data``, every column under its stable name."""
        return views.frame(self.name)

    def figures(self, views: StudyData) -> dict[str, Any]:
        """matplotlib figures by name (``Views.figures()`` collects every section's)."""
        return {}

    def words(self, views: StudyData) -> list[str]:
        """Plain-words findings this section adds to the report's summary."""
        return []

    def lines(self, views: StudyData) -> list[str]:
        """Plain-words lines shown in the section itself, above its table."""
        return []

    def available(self, views: StudyData) -> bool:
        """Whether there is anything to show (else ``missing``, or nothing for a child)."""
        shown = self.shown(views) if self.table is not None else None
        return bool(views.figures_of(self.name)) or (shown is not None and len(shown) > 0)

    def body(self, views: StudyData) -> Markup:
        """The section's HTML below its heading (its children are added after it)."""
        if not self.available(views) and self.missing is not None:
            return Markup(self.missing)
        parts = [Markup(self.intro)]
        lines = self.lines(views)
        if lines:
            items = Markup("").join(Markup("<li>{}</li>").format(line) for line in lines)
            parts.append(Markup('<ul class="summary">{}</ul>').format(items))
        figures = views.figures_of(self.name)
        table = Markup("")
        if self.table is not None:
            shown = self.shown(views)
            if shown is not None and len(shown):
                table = self.table.html(shown)
            elif self.empty is not None:
                table = Markup(self.empty)
        if self.figures_at == "beside":
            parts.append(figures_html(figures, self.figure_alt, lead=table))
        else:
            art = figures_html(figures, self.figure_alt)
            parts += [art, table] if self.figures_at == "above" else [table, art]
        return Markup("\n").join(p for p in parts if p)


def rows_of(frame: pd.DataFrame) -> Iterator[Any]:
    """The frame's rows as named tuples (attribute access by column, for sentences)."""
    return frame.itertuples()


def children(parent: str | None) -> list[type[Section]]:
    """The registered sections directly under ``parent`` (None: the page), in order."""
    found = [s for s in REPORT_SECTIONS.values() if s.parent == parent]
    return sorted(found, key=lambda s: (s.order, s.name))


def ordered() -> list[type[Section]]:
    """Every registered section in page order: each one, then its children."""
    out: list[type[Section]] = []

    def visit(parent: str | None) -> None:
        for section in children(parent):
            out.append(section)
            visit(section.name)

    visit(None)
    orphans = [s.name for s in REPORT_SECTIONS.values() if s not in out]
    if orphans:
        raise ValueError(f"report sections under an unknown parent: {', '.join(orphans)}")
    return out
