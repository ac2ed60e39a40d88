"""Executors: where a sweep's cells run. Each registers itself in its own module with
``@register_executor``; importing this package registers the built-in ones.

``local`` runs cells in this process; ``ray`` and ``slurm`` run them in other processes or on other
machines (their libraries are imported only when used). Every executor hands finished records
back to the driver, which alone writes the store.
"""

from atlbench.executors import local, ray, slurm
from atlbench.executors.base import ExecutorConfig, StopSweep, create_executor

__all__ = ["ExecutorConfig", "StopSweep", "create_executor", "local", "ray", "slurm"]
