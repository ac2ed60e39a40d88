"""atlbench: benchmark and transferability analysis for applied transfer learning.

From Python::

    import atlbench
    views = atlbench.run_suite("suites/quickstart.yaml")   # runs what is missing, then loads
    views.leaderboard, views.negative_transfer, views.figures()

    views = atlbench.load_results("results/quickstart")   # no compute
"""

from __future__ import annotations

from typing import Any

from atlbench.version import __version__


def run_suite(suite: Any, **options: Any) -> Any:
    """Run (or, with ``dry_run=False`` and nothing pending, just load) a study; return its
    :class:`~atlbench.report.views.Views`. See :func:`atlbench.api.run_suite`."""
    from atlbench.api import run_suite as run

    return run(suite, **options)


def load_results(results_dir: Any) -> Any:
    """The :class:`~atlbench.report.views.Views` of an existing results directory."""
    from atlbench.api import load_results as load

    return load(results_dir)


__all__ = ["__version__", "load_results", "run_suite"]
