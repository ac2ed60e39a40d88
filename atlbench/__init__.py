"""atlbench: benchmark and transferability analysis for applied transfer learning.

From Python::

    import atlbench
    views = atlbench.run_suite("suites/quickstart.yaml")   # runs what is missing, then loads
    views.leaderboard, views.negative_transfer, views.figures()

    views = atlbench.load_results("results/quickstart")   # no compute
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atlbench.version import __version__

if TYPE_CHECKING:  # the library loads on the first call, so `import atlbench` stays light
    from collections.abc import Mapping
    from pathlib import Path

    from atlbench.report._views import Views


def run_suite(
    suite: str | Path | Mapping[str, Any],
    results_dir: str | Path = "results",
    reports_dir: str | Path = "reports",
    device: str | None = None,
    executor: str = "local",
    retry_failed: bool = False,
    quiet: bool = True,
) -> Views:
    """Run the pending cells of ``suite`` (a YAML path or a mapping; finished cells are reused,
    so a second call only loads) and return the results' :class:`~atlbench.report.Views`.
    See :func:`atlbench._api.run_suite`."""
    from atlbench._api import run_suite as run

    return run(
        suite, results_dir=results_dir, reports_dir=reports_dir, device=device,
        executor=executor, retry_failed=retry_failed, quiet=quiet,
    )  # fmt: skip


def load_results(results_dir: str | Path) -> Views:
    """The :class:`~atlbench.report.Views` of an existing results directory."""
    from atlbench._api import load_results as load

    return load(results_dir)


__all__ = ["__version__", "load_results", "run_suite"]
