"""The tuning protocol every trainable strategy shares: one training config, one search design.

Fair comparisons need equal tuning by construction: every trainable strategy, scratch included,
gets exactly ``trials`` configurations from a search space that brackets its own optimum (for
fine-tuning that includes the backbone learning rate), under the same successive-halving schedule
(Jamieson & Talwalkar 2016). The design is a scrambled Latin hypercube (McKay et al. 1979; Owen
1998, via ``scipy.stats.qmc``) drawn from the cell's seed and the names of the searched
dimensions: paired cells (same seed, same space) get the same points, so tuning stays equal
between the two sides of a gain, while different seeds get different points, so no fixed handful
of points decides every study. Each dimension's range is still covered evenly (one point per
stratum) whatever the number of trials.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# what a plug-in strategy needs for its ``default_search``; the rest serves the tuning engine
__all__ = ["Dimension", "LogRange", "TrainingConfig"]


class Strict(BaseModel):
    """Base for every suite section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LogRange(Strict):
    """A hyperparameter searched on a log scale between ``low`` and ``high`` (inclusive)."""

    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LogRange:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.high < self.low:
            raise ValueError("needs finite 0 < low <= high")
        return self


# A dimension: a log range, a list of choices, or one fixed value.
Dimension = LogRange | tuple[float | int | str | bool, ...] | float | int | str | bool


class TrainingConfig(Strict):
    """The shared training and tuning budget (the suite's ``training:`` section)."""

    max_epochs: int = Field(60, ge=1, le=10_000)
    patience: int = Field(8, ge=1)
    # Burn-in: early stopping cannot end a run before it has trained this many epochs, and the
    # winner's retrain runs at least this many (capped at max_epochs). A scratch network on a
    # few images sits at chance on the hold-out for its first epochs (BatchNorm running
    # statistics lag the weights) and used to be stopped, and retrained, on epoch 1 (issue #23).
    min_epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    # An "epoch" passes over the train split as many times as it takes to see this many samples,
    # so patience and warm-up mean the same number of optimiser steps for 25 labels as for 2,500.
    min_epoch_samples: int = Field(256, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: int = Field(1, ge=0)
    grad_clip: float | None = 1.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    # "standard": random-resized crop and horizontal flip for images (He et al. 2019 give scratch
    # training its own augmented schedule); no effect on text.
    augment: Literal["none", "standard"] = "none"
    eval_batch_size: int = Field(256, ge=1)
    keep_checkpoints: bool = False
    compile: bool = False
    # train the top of a partly frozen network on cached outputs of its frozen bottom (exact:
    # see atlbench._frozen_prefix); off: the full forward pass every step. Same results either way.
    prefix_cache: bool = True
    # -- tuning: the same for every trainable strategy ----------------------------------------
    trials: int = Field(4, ge=1, le=256)
    schedule: Literal["successive_halving", "full"] = "successive_halving"
    halving: int = Field(2, ge=2, le=8)
    search: dict[str, Dimension] = Field(default_factory=dict)
    # budgeted validation: share of the budget held out per class for trainable strategies,
    # number of folds for frozen ones, and whether the winner is retrained on the whole budget
    holdout: float = Field(0.2, gt=0, lt=1)
    cv_folds: int = Field(5, ge=2, le=20)
    retrain: bool = True

    @field_validator("search")
    @classmethod
    def _dimensions(cls, value: dict[str, Dimension]) -> dict[str, Dimension]:
        for name, dim in value.items():
            if isinstance(dim, tuple) and not dim:
                raise ValueError(f"{name}: a list of choices needs at least one value")
        return value


# Keys a strategy entry may override in its own ``training:`` (everything but the tuning budget,
# which is equal for every strategy by construction).
SHARED_ONLY = ("trials", "schedule", "halving", "holdout", "cv_folds", "retrain")


def merged_training(base: TrainingConfig, override: dict[str, Any]) -> TrainingConfig:
    """``base`` with a strategy's own overrides (validated as a whole)."""
    return TrainingConfig.model_validate(base.model_dump() | override)


def design(space: dict[str, Dimension], trials: int, seed: int) -> list[dict[str, Any]]:
    """``trials`` configurations covering ``space``: a scrambled Latin hypercube.

    Every searched dimension (a log range or a list of choices) is one axis of the hypercube,
    drawn by ``scipy.stats.qmc.LatinHypercube`` with a generator seeded by ``seed`` and a stable
    hash of that dimension's name. The design is a pure function of its inputs: the same for
    paired cells, different across seeds; and a dimension two strategies share (``lr``) gets the
    same coordinates on both sides of a pair (common random numbers: the luck of the draw cancels
    in the gain). Each axis has exactly one point in each of ``trials`` equal strata, at a random
    place inside it; the axes are paired at random, as in any Latin hypercube. A log range maps
    a stratum to the same share of its log-range; a list of ``m`` choices takes choice
    ``floor(u * m)`` (each about ``trials / m`` times). A fixed value is the same in every trial.
    """
    from scipy.stats import qmc  # scipy.stats is slow to import: only when a cell tunes

    axis = {}
    for name in sorted(space):
        if isinstance(space[name], LogRange | tuple):
            rng = np.random.default_rng([seed & 0xFFFFFFFF, _name_key(name)])
            axis[name] = qmc.LatinHypercube(1, rng=rng).random(trials)[:, 0]
    return [
        {
            name: _value(dim, float(axis[name][i]) if name in axis else 0.0)
            for name, dim in sorted(space.items())
        }
        for i in range(trials)
    ]


def _name_key(name: str) -> int:
    """A stable 32-bit key of a dimension's name (``hash`` of a str changes per process)."""
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _value(dim: Dimension, u: float) -> Any:
    """The point at unit coordinate ``u`` in [0, 1) of one dimension."""
    if isinstance(dim, LogRange):
        lo, hi = math.log(dim.low), math.log(dim.high)
        return float(min(dim.high, max(dim.low, math.exp(lo + u * (hi - lo)))))
    if isinstance(dim, tuple):
        return dim[min(len(dim) - 1, int(u * len(dim)))]
    return dim


# How close to an end of its log-range a chosen value must be to count as on the boundary.
EDGE_FRACTION = 0.05


def edge_flags(space: dict[str, Dimension], chosen: dict[str, Any]) -> list[str]:
    """Dimensions whose chosen value lies on the boundary of the search space.

    A log range is flagged when the chosen value lies within ``EDGE_FRACTION`` (5%) of its
    log-range from either end; being the most extreme of the trial points is not enough, since a
    space-filling design always has one. A list of 3 or more choices is flagged when the first
    or last was chosen. The optimum may lie beyond: widen the space.
    """
    out = []
    for name, dim in sorted(space.items()):
        if name not in chosen:
            continue
        value = chosen[name]
        if isinstance(dim, LogRange) and dim.high > dim.low:
            pos = (math.log(value) - math.log(dim.low)) / (math.log(dim.high) - math.log(dim.low))
            if pos <= EDGE_FRACTION:
                out.append(f"{name} at the low edge of [{dim.low:g}, {dim.high:g}]")
            elif pos >= 1.0 - EDGE_FRACTION:
                out.append(f"{name} at the high edge of [{dim.low:g}, {dim.high:g}]")
        elif isinstance(dim, tuple) and len(dim) >= 3 and value in (dim[0], dim[-1]):
            side = "first" if value == dim[0] else "last"
            out.append(f"{name} = {value!r}, the {side} of its {len(dim)} choices")
    return out


def halving_rungs(trials: int, max_epochs: int, eta: int) -> list[tuple[int, int]]:
    """Successive halving (Jamieson & Talwalkar 2016): ``(survivors, epoch budget)`` per rung.

    ``K = floor(log_eta(trials))`` halvings; rung ``k`` keeps ``floor(trials / eta^k)`` trials
    and trains them up to ``max_epochs * eta^(k - K)`` epochs, so the last rung trains one trial
    to the full budget. With one trial it is a single full run.
    """
    k_max = 0
    while eta ** (k_max + 1) <= trials:
        k_max += 1
    rungs = []
    for k in range(k_max + 1):
        survivors = max(1, trials // eta**k)
        epochs = max(1, math.ceil(max_epochs * eta ** (k - k_max)))
        rungs.append((survivors, epochs))
    return rungs


def describe_space(space: dict[str, Dimension]) -> dict[str, Any]:
    """A JSON-able view of a search space (records and the report)."""
    out: dict[str, Any] = {}
    for name, dim in sorted(space.items()):
        if isinstance(dim, LogRange):
            out[name] = {"low": dim.low, "high": dim.high, "scale": "log"}
        elif isinstance(dim, tuple):
            out[name] = list(dim)
        else:
            out[name] = dim
    return out
