"""Adaptation strategies. Each registers itself in its own module with ``@register_strategy``;
:mod:`atlbench.components` lists the built-in modules. Adding one is one new module."""

from atlbench.strategies.base import (
    CellContext,
    CellOutcome,
    Selection,
    Strategy,
    StrategyParams,
    StrategySpec,
)

__all__ = ["CellContext", "CellOutcome", "Selection", "Strategy", "StrategyParams", "StrategySpec"]
