"""Target tasks: labelled train/val/test splits with a content fingerprint.

Each kind (builtin, folder, csv, hf_dataset) registers itself in its own module with
``@register_target``; :mod:`atlbench.components` lists the built-in modules.
"""

from atlbench.targets.base import Split, Target, TargetKind, TaskData

__all__ = ["Split", "Target", "TargetKind", "TaskData"]
