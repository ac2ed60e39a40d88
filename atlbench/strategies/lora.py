"""LoRA (Hu et al. 2021) through ``peft``: low-rank adapters on a frozen backbone, plus a new head.

Adapters are injected into a *copy* of the encoder: the runner caches one pre-trained encoder per
process and reloads its weights between cells, which an in-place injection would break. The
learning rate is searched by the shared protocol; rank and alpha are strategy parameters.
"""

from __future__ import annotations

import copy
import re
import warnings
from typing import Any, ClassVar, Literal

from pydantic import Field
from torch import nn

from atlbench.protocol import Dimension, LogRange
from atlbench.registry import register_strategy
from atlbench.sources._base import Encoder
from atlbench.strategies._base import CellContext, StrategyParams
from atlbench.strategies._trainable import TrainableStrategy, Trial
from atlbench.train import Classifier

# Attention projections by naming family: BERT-style, LLaMA/BART-style, DistilBERT, T5.
_QUERY_VALUE = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("q", "v"))
_VIT_ATTENTION = re.compile(r"(^|\.)attn\.(qkv|proj)$")


class LoRAParams(StrategyParams):
    rank: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    # "auto", or module names / suffixes as peft matches them (e.g. ["qkv"], ["query", "value"]).
    targets: Literal["auto"] | tuple[str, ...] = "auto"


def backbone_of(encoder: Encoder) -> nn.Module:
    """The wrapped network (timm model / HF model) whose module names users see."""
    inner = getattr(encoder, "model", None)
    return inner if isinstance(inner, nn.Module) else encoder


def _excluded(backbone: nn.Module) -> set[str]:
    """Source-task heads and poolers: never adapted (their output is not the features)."""
    skip: set[str] = set()
    get_classifier = getattr(backbone, "get_classifier", None)  # timm models have one
    classifier = get_classifier() if callable(get_classifier) else None
    for name, module in backbone.named_modules():
        if (classifier is not None and module is classifier) or name.split(".")[0] == "pooler":
            skip.add(name)
    return skip


def auto_targets(backbone: nn.Module) -> tuple[list[str], str]:
    """Module names to adapt and why: attention query/value (transformers, as in the LoRA paper),
    timm ViT's fused ``attn.qkv``/``attn.proj``, else a convnet's dense ``Conv2d`` layers (peft
    cannot adapt depthwise convolutions) plus its block linears, else every linear layer.
    """
    skip = _excluded(backbone)
    modules = [(n, m) for n, m in backbone.named_modules() if n and n not in skip]
    linears = [n for n, m in modules if isinstance(m, nn.Linear)]
    for q, v in _QUERY_VALUE:
        hits = [n for n in linears if n.rsplit(".", 1)[-1] in (q, v)]
        if hits:
            return hits, f"attention {q}/{v}"
    hits = [n for n in linears if _VIT_ATTENTION.search(n)]
    if hits:
        return hits, "attention qkv/proj"
    convs = [n for n, m in modules if isinstance(m, nn.Conv2d) and m.groups == 1]
    if convs:
        return convs + linears, "dense Conv2d + Linear"
    if linears:
        warnings.warn(
            f"LoRA: no attention projections or dense Conv2d layers found in "
            f"{type(backbone).__name__}; adapting all {len(linears)} Linear layers instead",
            stacklevel=2,
        )
        return linears, "all Linear (fallback)"
    raise ValueError(
        f"LoRA: {type(backbone).__name__} has no Linear or Conv2d layers peft can adapt; "
        "set strategy param 'targets' to module names"
    )


def inject_lora(encoder: Encoder, p: LoRAParams) -> tuple[Encoder, list[str], str]:
    """A copy of ``encoder`` with LoRA adapters; base weights frozen, adapters trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    encoder = copy.deepcopy(encoder)
    backbone = backbone_of(encoder)
    if p.targets == "auto":
        targets, rule = auto_targets(backbone)
    else:
        targets, rule = list(p.targets), "suite"
    config = LoraConfig(
        r=p.rank,
        lora_alpha=p.alpha,  # type: ignore[arg-type]  # peft says int; a float alpha works the same
        lora_dropout=p.dropout,
        target_modules=targets,
        bias="none",
    )
    adapted = inject_adapter_in_model(config, backbone)
    if backbone is not encoder:
        encoder.model = adapted
    mark_lora_trainable(encoder)
    return encoder, targets, rule


def merged_copy(encoder: Encoder) -> Encoder:
    """A copy with every adapter folded into its base weight and the adapter modules removed.

    W' = W + (alpha / r) B A, as ``peft`` merges it; the copy has the plain architecture's
    module names and state-dict keys again, so it loads wherever the source model does.
    """
    from peft.tuners.lora import LoraLayer

    merged = copy.deepcopy(encoder)
    adapted = [(n, m) for n, m in merged.named_modules() if isinstance(m, LoraLayer)]
    for name, module in adapted:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = merged.get_submodule(parent_name) if parent_name else merged
        setattr(parent, child, module.get_base_layer())
    return merged


def mark_lora_trainable(encoder: nn.Module) -> list[nn.Parameter]:
    """Freeze everything in the encoder except the LoRA matrices; return those."""
    out = []
    for name, prm in encoder.named_parameters():
        is_lora = "lora_" in name
        prm.requires_grad_(is_lora)
        if is_lora:
            out.append(prm)
    return out


@register_strategy("lora")
class LoRA(TrainableStrategy[LoRAParams]):
    """Low-rank adapters in the backbone + a new linear head; nothing else trains."""

    Params = LoRAParams
    version = 2  # 2: tuned by the shared protocol
    default_search: ClassVar[dict[str, Dimension]] = {"lr": LogRange(low=3e-4, high=1e-2)}

    def __init__(self) -> None:
        self.chosen: dict[str, Any] = {}

    def encoder(self, ctx: CellContext[LoRAParams]) -> Encoder:
        adapted, targets, rule = inject_lora(ctx.build_encoder(ctx.pretrained), ctx.params)
        self.chosen = {"lora_rule": rule, "lora_modules": len(targets)}
        return adapted

    def param_groups(
        self, ctx: CellContext[LoRAParams], model: Classifier, trial: Trial
    ) -> list[dict[str, Any]]:
        adapters = mark_lora_trainable(model.encoder)
        return [
            {"params": adapters, "lr_mult": 1.0, "name": "lora"},
            {"params": list(model.head.parameters()), "lr_mult": 1.0, "name": "head"},
        ]

    def export_encoder(self, encoder: Encoder) -> Encoder:
        return merged_copy(encoder)

    def describe(self, ctx: CellContext[LoRAParams]) -> dict[str, Any]:
        return dict(self.chosen)
