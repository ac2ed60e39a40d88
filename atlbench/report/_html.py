"""The self-contained HTML report: the registered sections, in order, on one page.

Each section (:mod:`atlbench.report.sections`) renders its own body; this module puts the
top-level ones under ``<h2>`` headings with a navigation bar, nests each section's children
under ``<h3>`` (or a fold), and replaces a section whose columns the records lack with one line
saying why. Everything user-supplied is escaped (jinja2 autoescape for the page, one by one in
tables); figures are base64 data URIs, so the file opens offline and fetches nothing. Tables fit
a 1280 px window: detail columns fold under each row, and every column is in the CSVs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from atlbench.report._views import Views
from atlbench.report.sections import Section, children
from atlbench.report.sections.summary import headlines, protocol_lines

__all__ = ["headlines", "protocol_lines", "render_report", "top_sections", "write_report"]


def top_sections() -> list[tuple[str, str]]:
    """(anchor, navigation title) of every top-level section, in page order."""
    return [(s.name, s.nav or s.title) for s in children(None)]


def _children(section: type[Section], views: Views) -> Markup:
    parts = []
    for child in children(section.name):
        body = _section_html(child, views)
        if body is not None:
            parts.append(body)
    return Markup("\n").join(parts)


def _section_html(cls: type[Section], views: Views) -> Markup | None:
    """A child section: a heading (or a fold) over its body and its own children; None when it
    has nothing to show and nothing to say about that."""
    section = cls()
    quiet = section.empty is None and section.missing is None and cls.name not in views.omitted
    if quiet and not section.available(views):
        return None
    inner = _inner(cls, views)
    if section.folded:
        return Markup(
            '<section id="{}"><details><summary>{}</summary>{}</details></section>'
        ).format(cls.name, cls.title, inner)
    heading = Markup("<h3>{}</h3>\n").format(cls.title) if cls.title else Markup("")
    return Markup('<section id="{}">{}{}</section>').format(cls.name, heading, inner)


def _inner(cls: type[Section], views: Views) -> Markup:
    """A section's body and children, or the one line saying why it is left out."""
    if cls.name in views.omitted:
        return Markup('<p class="muted">{}</p>').format(views.omitted[cls.name])
    return Markup("\n").join(p for p in (cls().body(views), _children(cls, views)) if p)


def render_report(views: Views, suite_name: str, description: str = "", csv_dir: str = "") -> str:
    env = Environment(
        loader=PackageLoader("atlbench.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    records = views.records
    done = int((records["status"] == "done").sum()) if "status" in records else 0
    sections = [(s.name, s.nav or s.title, s.title, _inner(s, views)) for s in children(None)]
    return env.get_template("report.html.j2").render(
        suite_name=suite_name,
        description=description,
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        n_done=done,
        n_failed=len(views.failures),
        csv_dir=csv_dir,
        sections=sections,
    )


def write_report(
    views: Views,
    path: Path,
    suite_name: str,
    description: str = "",
    results_dir: Path | None = None,
) -> Path:
    from atlbench._cache import atomic_write_text

    csv_dir = ""
    if results_dir is not None:
        csv_dir = os.path.relpath(Path(results_dir).resolve(), Path(path).resolve().parent)
    atomic_write_text(path, render_report(views, suite_name, description, csv_dir))
    return path
