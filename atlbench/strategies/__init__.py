"""Adaptation strategies. Each registers itself in its own module with ``@register_strategy``;
:mod:`atlbench._components` lists the built-in modules. Adding one is one new module::

    class MyParams(StrategyParams):
        k: int = 5

    @register_strategy("mine")
    class Mine(Strategy[MyParams]):
        Params = MyParams

        def run(self, ctx: CellContext[MyParams]) -> CellOutcome: ...  # ctx.params.k is an int

A strategy that trains subclasses :class:`atlbench.strategies._trainable.TrainableStrategy`
(not re-exported here: it imports the training engine, which imports this package).
"""

from atlbench.registry import register_strategy
from atlbench.strategies._base import (
    CellContext,
    CellOutcome,
    Selection,
    Strategy,
    StrategyParams,
    StrategySpec,
)

__all__ = [
    "CellContext",
    "CellOutcome",
    "Selection",
    "Strategy",
    "StrategyParams",
    "StrategySpec",
    "register_strategy",
]
