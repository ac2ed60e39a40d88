"""Adaptation strategies by name (registry). Adding one is one new class and one line here."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from atlbench.registry import Registry
from atlbench.strategies.base import CellContext, CellOutcome, Strategy, StrategyParams
from atlbench.strategies.coral import Coral
from atlbench.strategies.finetune import Finetune, Scratch
from atlbench.strategies.frozen import KNN, LinearProbe
from atlbench.strategies.lora import LoRA
from atlbench.strategies.lpft import LPFT
from atlbench.strategies.multitask import MultiTask
from atlbench.strategies.unfreeze import GradualUnfreeze

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
for _cls in (LinearProbe, KNN, Finetune, GradualUnfreeze, LPFT, LoRA, Coral, MultiTask, Scratch):
    STRATEGIES.register(_cls.name)(_cls)


def strategy_params(entry: Any) -> StrategyParams:
    return STRATEGIES.get(entry.name).Params.model_validate(entry.params)


def validate_strategy(entry: Any) -> tuple[str, str] | None:
    from atlbench.suite import _first_error

    try:
        strategy_params(entry)
    except ValidationError as err:
        where, message = _first_error(err)
        return (f".{where}" if where else ""), message
    return None


__all__ = [
    "STRATEGIES",
    "CellContext",
    "CellOutcome",
    "Strategy",
    "strategy_params",
    "validate_strategy",
]
