"""What a worker process runs for the local pool, ``ray`` and ``slurm`` executors.

The helpers below rebuild a :class:`~atlbench._runner.Worker` once per process (so its feature and
encoder caches serve every task the process gets), and turn a crash that escapes
``Worker.run_task`` into the failure result of the task's type instead of a lost task.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atlbench._runner import TaskResult, Worker
    from atlbench.plan import Cell, EstimateTask, Task
    from atlbench.study import Study


# -- what a remote process runs ----------------------------------------------------------------

_WORKERS: dict[tuple[str, str], Worker] = {}


def package_root() -> str:
    """The directory holding the ``atlbench`` package the driver imported.

    Remote processes put it first on ``PYTHONPATH`` so they run the driver's code, also when
    atlbench is used from a checkout rather than installed.
    """
    return str(Path(__file__).resolve().parents[2])


def worker_env() -> dict[str, str]:
    """Environment a remote process needs: the shared cache, hub mode and the driver's code."""
    from atlbench._cache import cache_dir

    env = {"ATLBENCH_CACHE": str(cache_dir().resolve()), "TOKENIZERS_PARALLELISM": "false"}
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME"):
        if name in os.environ:
            env[name] = os.environ[name]
    paths = [package_root(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _apply_env(env: dict[str, str], cwd: str | None) -> None:
    """Adopt the driver's environment and working directory (relative suite paths resolve alike)."""
    os.environ.update(env)
    root = env.get("PYTHONPATH", "").split(os.pathsep)[0]
    if root and root not in sys.path:
        sys.path.insert(0, root)
    if cwd and os.path.isdir(cwd) and os.getcwd() != cwd:
        os.chdir(cwd)


def study_payload(study: Study) -> dict[str, Any]:
    """What a remote process needs to rebuild the study: the validated suite and its origin."""
    return {"data": study.data, "origin": study.origin}


def process_worker(payload: dict[str, Any], device: str) -> Worker:
    """One Worker per (suite, device) per process, so consecutive cells share its caches.

    The remote process resolves the suite itself (content fingerprints are memoised in the
    shared cache), so it builds exactly the objects the driver planned with.
    """
    from atlbench._cache import content_hash
    from atlbench._runner import Worker
    from atlbench._timing import resolve_device
    from atlbench.study import parse_study

    key = (content_hash(payload), device)
    if key not in _WORKERS:
        _WORKERS.clear()  # a long-lived Ray worker may serve several sweeps: keep one
        study = parse_study(payload["data"], payload["origin"])
        _WORKERS[key] = Worker(study, resolve_device(device))
    return _WORKERS[key]


def remote_task(
    payload: dict[str, Any],
    device: str,
    task: Task,
    checkpoint_root: str | None,
    env: dict[str, str],
    cwd: str | None,
) -> TaskResult:
    """Run one task of the plan in whatever process this is; never raises for its own failure."""
    _apply_env(env, cwd)
    root = Path(checkpoint_root) if checkpoint_root else None
    return process_worker(payload, device).run_task(task, lambda message: None, root)


def remote_call(fn: Callable[..., Any], args: tuple[Any, ...], env: dict[str, str],
                cwd: str | None) -> Any:  # fmt: skip
    """Any picklable call (pre-flight's zoo pre-training) in whatever process this is."""
    _apply_env(env, cwd)
    return fn(*args)


def _first_line(error: BaseException | str) -> str:
    """The one line a failure is recorded under (its type and message, at most 500 characters)."""
    message = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
    return (message.strip().splitlines() or ["worker failed"])[0][:500]


def crashed_record(cell: Cell, suite_name: str, error: BaseException | str) -> dict[str, Any]:
    """A failed record for a cell whose process died or whose job system lost it."""
    from atlbench._runner import cell_identity

    trace = (
        "".join(traceback.format_exception(error)) if isinstance(error, BaseException) else error
    )
    return cell_identity(cell) | {
        "suite": suite_name,
        "status": "failed",
        "error": _first_line(error),
        "traceback": trace[-20_000:],
        "wall_time_s": 0.0,
        "created_at": time.time(),
    }


def crashed_estimates(task: EstimateTask, error: BaseException | str) -> list[dict[str, Any]]:
    """Failed estimator rows for a pair whose process died (they are retried on the next run)."""
    first = _first_line(error)
    return [
        {
            "key": task.key,
            "estimator": name,
            "source": source,
            "source_key": source,
            "target": task.target,
            "budget": task.budget.label if task.budget is not None else "all",
            "seed": task.seed,
            "status": "failed",
            "error": first,
        }
        for source in task.sources
        for name in task.estimators
    ]


def failure_result(task: Task, suite_name: str, error: BaseException | str) -> TaskResult:
    """What a task whose process died (or whose job system lost it) hands the driver: a failed
    record, failed estimator rows, or a skipped artifact, so the next run retries it."""
    from atlbench.artifacts import TaskSkipped
    from atlbench.plan import Cell, EstimateTask
    from atlbench.record import CellRecord

    if isinstance(task, Cell):
        return CellRecord.from_row(crashed_record(task, suite_name, error)), None
    if isinstance(task, EstimateTask):
        return crashed_estimates(task, error)
    return TaskSkipped(f"{task.label}: {_first_line(error)}", error=True)


def deliver(
    task: Task,
    result: TaskResult | BaseException,
    suite_name: str,
    on_result: Callable[[Task, TaskResult], None],
) -> None:
    """Hand a task's result, or the failure that replaced the exception of a dead process, to
    the driver."""
    if isinstance(result, BaseException):
        result = failure_result(task, suite_name, result)
    on_result(task, result)


__all__ = [
    "crashed_estimates",
    "crashed_record",
    "deliver",
    "failure_result",
    "process_worker",
    "remote_call",
    "remote_task",
    "study_payload",
    "worker_env",
]
