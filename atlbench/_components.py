"""The built-in suite components: importing this module registers every built-in source kind,
target kind, strategy and estimator (each registers itself in its own module).

This is the one list of the modules a suite's entries come from; :func:`atlbench.study.load_study`
imports it. Executors are not suite components (a suite means the same study wherever it runs):
the :mod:`atlbench.executors` package registers those. A plug-in registers itself the same way,
with the decorators of :mod:`atlbench.registry`, in its own module.
"""

import atlbench.estimators as estimators
from atlbench.sources import checkpoint, hf, timm, zoo
from atlbench.strategies import (
    coral,
    finetune,
    frozen,
    ia3,
    lora,
    lpft,
    multitask,
    prompt,
    unfreeze,
    vpt,
)
from atlbench.targets import builtin, files
from atlbench.targets import hf as hf_dataset

BUILTIN_MODULES = (
    estimators,
    checkpoint,
    hf,
    timm,
    zoo,
    coral,
    finetune,
    frozen,
    ia3,
    lora,
    lpft,
    multitask,
    prompt,
    unfreeze,
    vpt,
    builtin,
    files,
    hf_dataset,
)
