"""(IA)^3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning") through ``peft``: learned vectors rescale a frozen backbone's keys, values
and feed-forward activations, plus a new linear head.

Why: the smallest adapter in common use (one vector per adapted layer, about a tenth of LoRA's
parameters at rank 8), which Liu et al. found to beat LoRA in the few-shot regime this benchmark
measures. The vectors start at one (the source model exactly) and are injected into a *copy* of
the encoder, as for LoRA; checkpoints fold them back into the weights (a row or column scaling),
so they load wherever the source model does.
"""

from __future__ import annotations

import copy
import re
from typing import Any, ClassVar, Literal

import torch
from pydantic import model_validator
from torch import nn

from atlbench.protocol import Dimension, LogRange
from atlbench.registry import register_strategy
from atlbench.sources._base import Encoder
from atlbench.strategies._base import CellContext, StrategyParams
from atlbench.strategies._trainable import TrainableStrategy, Trial
from atlbench.strategies.lora import _excluded, backbone_of
from atlbench.train import Classifier

# Key/value projections by naming family: BERT-style, LLaMA/BART/Eva-style, DistilBERT, T5.
_KEY_VALUE = (("key", "value"), ("k_proj", "v_proj"), ("k_lin", "v_lin"), ("k", "v"))
_VIT_QKV = re.compile(r"(^|\.)attn\.qkv$")
# The second linear of a feed-forward block (its input is the activation l_ff rescales): BERT
# (layer.N.output.dense), DistilBERT, timm ViT, LLaMA, T5, GPT-NeoX; must narrow (in > out).
_FF_DOWN = re.compile(r"(^|\.)(output\.dense|ffn\.lin2|mlp\.fc2|down_proj|wo|dense_4h_to_h)$")


class IA3Params(StrategyParams):
    # "auto" (see ia3_targets), or module names / suffixes as peft matches them
    targets: Literal["auto"] | tuple[str, ...] = "auto"
    # with explicit targets: those among them whose *input* is rescaled (feed-forward layers)
    feedforward: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _feedforward_is_targeted(self) -> IA3Params:
        if self.feedforward and self.targets == "auto":
            raise ValueError("feedforward names need explicit targets (auto chooses its own)")
        stray = [f for f in self.feedforward if f not in self.targets]
        if stray:
            raise ValueError(f"feedforward modules must also be targets: {stray}")
        return self


def ia3_targets(backbone: nn.Module) -> tuple[list[str], list[str], str]:
    """(modules to rescale, those of them rescaled at their input, the rule that chose them).

    Transformers: the attention key and value projections (outputs rescaled) and each block's
    feed-forward down-projection (input rescaled), as in the paper. timm ViTs fuse q, k and v in
    ``attn.qkv``: its whole output is rescaled, queries included; a query and a key scale enter
    ``q . k`` only through their product per channel, so the functions are (IA)^3's, with
    ``embed_dim`` redundant parameters per block. Convnets (outside the paper): the output
    channels of every dense ``Conv2d``. Source heads and poolers are never adapted.
    """
    skip = _excluded(backbone)
    modules = [(n, m) for n, m in backbone.named_modules() if n and n not in skip]
    linears = [(n, m) for n, m in modules if isinstance(m, nn.Linear)]
    ff = [n for n, m in linears if _FF_DOWN.search(n) and m.in_features > m.out_features]
    for k, v in _KEY_VALUE:
        hits = [n for n, _ in linears if n.rsplit(".", 1)[-1] in (k, v)]
        if hits:
            return hits + ff, ff, f"attention {k}/{v}" + (" + feed-forward" if ff else "")
    hits = [n for n, _ in linears if _VIT_QKV.search(n)]
    if hits:
        return hits + ff, ff, "attention qkv" + (" + feed-forward" if ff else "")
    convs = [n for n, m in modules if isinstance(m, nn.Conv2d) and m.groups == 1]
    if convs:
        return convs, [], "dense Conv2d outputs"
    raise ValueError(
        f"ia3: no key/value projections or dense Conv2d layers found in "
        f"{type(backbone).__name__}; set strategy param 'targets' to module names"
    )


def _exact(names: list[str]) -> str:
    """A peft pattern (``re.fullmatch``) for exactly these module names."""
    return "|".join(f"(?:{re.escape(n)})" for n in names)


def inject_ia3(encoder: Encoder, p: IA3Params) -> tuple[Encoder, list[str], list[str], str]:
    """A copy of ``encoder`` with (IA)^3 vectors (all ones); base weights frozen."""
    from peft import IA3Config, inject_adapter_in_model

    encoder = copy.deepcopy(encoder)
    backbone = backbone_of(encoder)
    if p.targets == "auto":
        targets, ff, rule = ia3_targets(backbone)
        config = IA3Config(target_modules=_exact(targets), feedforward_modules=_exact(ff) or [])
    else:
        targets, ff, rule = list(p.targets), list(p.feedforward), "suite"
        config = IA3Config(target_modules=targets, feedforward_modules=ff)
    with torch.random.fork_rng(devices=[]):  # peft draws (then overwrites) random vectors
        adapted = inject_adapter_in_model(config, backbone)
    if backbone is not encoder:
        encoder.model = adapted
    mark_ia3_trainable(encoder)
    return encoder, targets, ff, rule


def mark_ia3_trainable(encoder: nn.Module) -> list[nn.Parameter]:
    """Freeze everything in the encoder except the (IA)^3 vectors; return those."""
    out = []
    for name, prm in encoder.named_parameters():
        is_ia3 = "ia3_l" in name
        prm.requires_grad_(is_ia3)
        if is_ia3:
            out.append(prm)
    return out


def merged_copy(encoder: Encoder) -> Encoder:
    """A copy with every (IA)^3 vector folded into its layer and the adapter modules removed.

    An output scaling ``l`` becomes ``diag(l) W`` and ``l * b``; an input scaling ``W diag(l)``
    (peft's merge). The copy has the plain architecture's module names and state-dict keys.
    """
    from peft.tuners.ia3 import IA3Layer

    merged = copy.deepcopy(encoder)
    adapted = [(n, m) for n, m in merged.named_modules() if isinstance(m, IA3Layer)]
    for name, module in adapted:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = merged.get_submodule(parent_name) if parent_name else merged
        setattr(parent, child, module.get_base_layer())
    return merged


@register_strategy("ia3")
class IA3(TrainableStrategy[IA3Params]):
    """(IA)^3 vectors in a frozen backbone + a new linear head; nothing else trains.

    ``trains_encoder`` is True (the default): merged, the vectors change the backbone's weights,
    exactly as LoRA's adapters do, and the checkpoint is that merged backbone. The vectors train
    without weight decay: they start at one, and decay would pull them toward zero (switching
    keys, values and activations off), not toward the source model; the paper uses none.
    """

    Params = IA3Params
    # Liu et al. train the vectors at 3e-3 (Adafactor); scalings tolerate higher AdamW rates than
    # weights do, so the range reaches up to 3e-2.
    default_search: ClassVar[dict[str, Dimension]] = {"lr": LogRange(low=1e-3, high=3e-2)}

    def __init__(self) -> None:
        self.chosen: dict[str, Any] = {}

    def encoder(self, ctx: CellContext[IA3Params]) -> Encoder:
        adapted, targets, ff, rule = inject_ia3(ctx.build_encoder(ctx.pretrained), ctx.params)
        self.chosen = {"ia3_rule": rule, "ia3_modules": len(targets), "ia3_feedforward": len(ff)}
        return adapted

    def param_groups(
        self, ctx: CellContext[IA3Params], model: Classifier, trial: Trial
    ) -> list[dict[str, Any]]:
        vectors = mark_ia3_trainable(model.encoder)
        return [
            {"params": vectors, "lr_mult": 1.0, "weight_decay": 0.0, "name": "ia3"},
            {"params": list(model.head.parameters()), "lr_mult": 1.0, "name": "head"},
        ]

    def export_encoder(self, encoder: Encoder) -> Encoder:
        return merged_copy(encoder)

    def describe(self, ctx: CellContext[IA3Params]) -> dict[str, Any]:
        return dict(self.chosen)
