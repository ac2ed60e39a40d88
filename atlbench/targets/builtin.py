"""Built-in offline tasks: real handwritten digits, procedural images and generated topic text.

The data seed is part of the task (fixed per suite entry); a cell's seed only picks label subsets,
initialisation and batch order, so every cell of a target sees the same splits.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from atlbench.registry import register_target
from atlbench.targets import _generators as gen
from atlbench.targets._base import TargetKind, TaskData, from_single_pool

IMAGE_TASKS = ("shapes", "textures", "fractals")
TASKS = ("digits", *IMAGE_TASKS, "topic_text")
CLASS_NAMES: dict[str, list[str]] = {
    "digits": [str(d) for d in range(10)],
    "shapes": gen.SHAPE_CLASSES,
    "textures": gen.TEXTURE_CLASSES,
    "fractals": gen.FRACTAL_CLASSES,
    "topic_text": list(gen.TOPICS),
}
Colour = Literal["swap", "bgr", "grey", "warm", "cool"]  # gen.COLOUR_SHIFTS, checked in tests


class ShiftParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rotation: float = 0.0
    random_rotation: bool = False
    invert: bool = False
    colour: Colour | None = None
    noise: float = Field(0.0, ge=0, le=1)
    blur: float = Field(0.0, ge=0)
    label_permutation: int | None = None


class BuiltinParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    task: Literal["digits", "shapes", "textures", "fractals", "topic_text"]
    classes: int | tuple[int | str, ...] | None = None  # a count (first k classes) or names/ids
    n_per_class: int = Field(100, ge=3, le=100_000)
    size: int = Field(32, ge=8, le=256)
    shift: ShiftParams | None = None
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    test_fraction: float = Field(0.3, gt=0, lt=0.6)
    label_noise: float = Field(0.0, ge=0, lt=1)
    # topic_text only: draw cue words from all of each topic's vocabulary or from one half
    vocabulary: Literal["all", "first", "second"] = "all"

    @field_validator("vocabulary")
    @classmethod
    def _text_only(cls, value: str, info: ValidationInfo) -> str:
        if value != "all" and info.data.get("task") != "topic_text":
            raise ValueError("only topic_text has a vocabulary to split")
        return value

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, value: Any, info: ValidationInfo) -> Any:
        """Resolve class names/ids now, so a bad class fails at parse time, not in a cell."""
        task = info.data.get("task")
        if value is not None and task in CLASS_NAMES:
            gen.resolve_classes(CLASS_NAMES[task], value)  # raises ValueError naming the class
        return value


def task_modality(params: BuiltinParams) -> str:
    return "text" if params.task == "topic_text" else "image"


def generate_pool(params: BuiltinParams) -> tuple[Any, Any, list[str]]:
    """Raw inputs, labels and class names of the whole task before splitting (label noise in)."""
    inputs, labels, names = _generate(params)
    if params.label_noise and params.task != "topic_text":  # topic_text flips its own
        rng = np.random.default_rng([params.seed, 77])
        labels = gen.flip_labels(labels, params.label_noise, len(names), rng)
    return inputs, labels, names


def _generate(params: BuiltinParams) -> tuple[Any, Any, list[str]]:
    shift = gen.DomainShift(**params.shift.model_dump()) if params.shift else None
    if params.task == "digits":
        digits: list[int] | None = None  # a count means the first k digits; 0 or (): all
        if isinstance(params.classes, int):
            digits = list(range(params.classes)) or None
        elif params.classes:
            digits = [int(c) for c in params.classes]
        return gen.digits(params.seed, size=params.size, classes=digits, shift=shift)
    if params.task == "topic_text":
        return gen.topic_text(
            params.n_per_class, params.seed, classes=params.classes,
            label_noise=params.label_noise, vocabulary=params.vocabulary,
        )  # fmt: skip
    family = gen.IMAGE_FAMILIES[params.task]
    return family(
        params.n_per_class, params.seed, size=params.size, classes=params.classes, shift=shift
    )


def load_builtin(task_id: str, params: BuiltinParams, split_seed: int | None = None) -> TaskData:
    inputs, labels, class_names = generate_pool(params)
    return from_single_pool(
        task_id,
        task_modality(params),
        inputs,
        labels,
        list(class_names),
        seed=params.seed if split_seed is None else split_seed,
        val_fraction=params.val_fraction,
        test_fraction=params.test_fraction,
        fingerprint={"builtin": params.model_dump(), "generator_version": gen.GENERATOR_VERSION},
    )


@register_target("builtin")
class BuiltinTarget(TargetKind[BuiltinParams]):
    """``builtin: {task, classes, shift, ...}``: offline tasks generated from a seed."""

    Params = BuiltinParams

    @classmethod
    def modality(cls, params: BuiltinParams) -> str:
        return task_modality(params)

    @classmethod
    def content(cls, params: BuiltinParams) -> dict[str, Any]:
        return {"builtin": params.model_dump(), "generator_version": gen.GENERATOR_VERSION}

    @classmethod
    def load(cls, target_id: str, params: BuiltinParams, split_seed: int | None = None) -> TaskData:
        return load_builtin(target_id, params, split_seed)
