"""Visual prompt tuning, VPT-shallow (Jia et al. 2022, "Visual Prompt Tuning"), for timm ViTs.

``n_tokens`` learnable prompt tokens are inserted after the class (and register) tokens, in the
input space of the first transformer block; the backbone is frozen and a new linear head trains.
Why: the vision counterpart of prompt tuning, a few thousand parameters that Jia et al. found to
match or beat full fine-tuning on many VTAB tasks at small budgets; peft has no VPT, so it is
written here.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch import nn

from atlbench.registry import register_strategy
from atlbench.sources._base import Encoder, Source
from atlbench.sources.timm import TimmEncoder
from atlbench.strategies._base import CellContext, StrategyParams
from atlbench.strategies.prompt import ContinuousPromptStrategy

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer


class VPTParams(StrategyParams):
    n_tokens: int = Field(10, ge=1, le=1024)


def vit_of(encoder: Encoder) -> VisionTransformer:
    """The timm ``VisionTransformer`` inside ``encoder``, or a ValueError: VPT needs a ViT."""
    from timm.models.vision_transformer import VisionTransformer

    model = getattr(encoder, "model", None)
    if not isinstance(encoder, TimmEncoder) or not isinstance(model, VisionTransformer):
        got = type(model if isinstance(model, nn.Module) else encoder).__name__
        raise ValueError(
            f"VPT needs a ViT: a timm VisionTransformer (ViT, DeiT, ...) whose input tokens it can "
            f"extend, got {got}; use lora, ia3 or finetune for other architectures"
        )
    return model


def initial_prompt(vit: VisionTransformer, n_tokens: int, seed: int) -> torch.Tensor:
    """Jia et al.'s initialisation: Xavier-uniform over (patch pixels x channels, embed dim)."""
    patch = vit.patch_embed.patch_size
    fan_in = 3 * int(math.prod(patch))
    dim = int(vit.embed_dim)
    bound = math.sqrt(6.0 / (fan_in + dim))
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n_tokens, dim, generator=gen) * 2 - 1) * bound


class VPTEncoder(TimmEncoder):
    """A copy of a timm ViT encoder with prompt tokens between its prefix and patch tokens.

    The prompts carry no position embedding (they are added after it) and enter right before the
    first block. Their outputs are dropped before the model's own head pooling, so ``token`` (the
    class token), ``avg`` (over patch tokens) and attention pooling read the same positions as in
    the source model; the prompts act through attention. Backbone keys are the source's.
    """

    model: VisionTransformer  # vit_of checked it

    def __init__(self, base: TimmEncoder, prompt: torch.Tensor) -> None:
        super().__init__(copy.deepcopy(base.model), base.input_size, base.has_source_head)
        self.mean, self.std = base.mean, base.std
        self.model.requires_grad_(False)
        self.n_tokens = int(prompt.shape[0])
        self.prompt = nn.Parameter(prompt.detach().clone())

    def trained_parameters(self) -> list[nn.Parameter]:
        return [self.prompt]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.model
        tokens = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        k = int(vit.num_prefix_tokens)  # class token, register tokens, distillation token
        prompt = self.prompt.to(tokens.dtype).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([tokens[:, :k], prompt, tokens[:, k:]], dim=1)
        tokens = vit.norm(vit.blocks(tokens))
        tokens = torch.cat([tokens[:, :k], tokens[:, k + self.n_tokens :]], dim=1)
        return vit.forward_head(tokens, pre_logits=True)


@register_strategy("vpt")
class VPT(ContinuousPromptStrategy[VPTParams]):
    """VPT-shallow: prompt tokens before the first block of a frozen timm ViT, plus a new head.

    ``trains_encoder`` is True for the reasons of :class:`ContinuousPromptStrategy`: the backbone's
    weights are unchanged, but the features are learned on the target. The learning rate is
    searched over the same range as text prompts' (Jia et al. search theirs per task).
    """

    Params = VPTParams

    @classmethod
    def supports(cls, source: Source) -> str | None:
        """A timm architecture built by timm's ViT (or DeiT) module, judged from its name."""
        import timm

        kind, _, rest = source.arch.partition(":")
        name = rest.partition("@")[0].split(".", 1)[0]
        vits = set(timm.list_models(module="vision_transformer")) | set(
            timm.list_models(module="deit")
        )
        return None if kind == "timm" and name in vits else "vpt needs a timm ViT"

    def encoder(self, ctx: CellContext[VPTParams]) -> Encoder:
        base = ctx.build_encoder(ctx.pretrained)
        vit = vit_of(base)
        assert isinstance(base, TimmEncoder)
        return VPTEncoder(base, initial_prompt(vit, ctx.params.n_tokens, ctx.seed))

    def describe(self, ctx: CellContext[VPTParams]) -> dict[str, Any]:
        return {"prompt_tokens": ctx.params.n_tokens}
