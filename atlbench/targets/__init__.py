"""Target tasks: labelled train/val/test splits with a content fingerprint.

Each kind (builtin, folder, csv, hf_dataset) registers itself in its own module with
``@register_target``; :mod:`atlbench._components` lists the built-in modules.
"""

from atlbench.registry import register_target
from atlbench.targets._base import (
    Split,
    Target,
    TargetKind,
    TaskData,
    assemble_splits,
    encode_labels,
    from_single_pool,
)

__all__ = [
    "Split",
    "Target",
    "TargetKind",
    "TaskData",
    "assemble_splits",
    "encode_labels",
    "from_single_pool",
    "register_target",
]
