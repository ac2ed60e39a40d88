"""Executors: where a sweep's tasks (cells, estimator tasks, CKA comparisons, domain gaps, label
mappings) run. Each registers itself in its own module with ``@register_executor``; importing this
package registers the built-in ones.

``local`` runs tasks in this process or a small pool; ``ray`` and ``slurm`` run them in other
processes or on other machines (their libraries are imported only when used). Every executor hands
finished results back to the driver, which alone writes the store.
"""

from atlbench.executors import local, ray, slurm
from atlbench.executors._base import Executor, ExecutorConfig, StopSweep, create_executor

__all__ = ["Executor", "ExecutorConfig", "StopSweep", "create_executor", "local", "ray", "slurm"]
