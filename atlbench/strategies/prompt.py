"""Prompt tuning and prefix tuning for Hugging Face text encoders: a few trained continuous
"tokens" steer a frozen backbone, and a new linear head reads its pooled features.

Why: both adapt with a few thousand to a few tens of thousands of parameters and leave every
backbone weight as it was, a cheaper point on the cost/accuracy curve than LoRA or fine-tuning;
whether a source model can be steered this well at small label budgets is itself a transfer
question.

- Prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"):
  ``n_tokens`` trained embeddings are prepended to the embedded input, at the input layer only.
  Written here (a dozen lines): peft's version returns hidden states for the prompt positions too
  and leaves pooling to the caller, and the pooling is what must stay the encoder's own.
- Prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation"):
  trained keys and values of ``n_tokens`` virtual positions at *every* attention layer, through
  ``peft``'s ``PrefixTuningConfig`` (which hands them to the model as a key/value cache).

Both take the virtual tokens as the first ``n_tokens`` positions of the sequence (Li & Liang's
``[PREFIX; x]``; peft offsets position ids the same way), so the real tokens sit at positions
``n_tokens ...`` and ``n_tokens + max_length`` must fit the model's position embeddings.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from pydantic import Field
from torch import nn

from atlbench.protocol import Dimension, LogRange
from atlbench.registry import register_strategy
from atlbench.sources._base import Encoder, Source
from atlbench.sources.hf import HFTextEncoder
from atlbench.strategies._base import CellContext, ParamsT, StrategyParams
from atlbench.strategies._trainable import TrainableStrategy, Trial
from atlbench.train import Classifier

if TYPE_CHECKING:
    from peft import PeftModel

# Continuous prompts move at larger rates than weights: Lester et al. train theirs at 0.3 with
# Adafactor (a step relative to the parameter's scale), about 1e-2 in AdamW terms for embeddings
# of this size; the range brackets that by a factor of ten down and three up.
PROMPT_SEARCH: dict[str, Dimension] = {"lr": LogRange(low=1e-3, high=3e-2)}


def text_encoder(encoder: Encoder, strategy: str) -> HFTextEncoder:
    """``encoder`` as a Hugging Face text encoder, or a ValueError naming the strategy."""
    if not isinstance(encoder, HFTextEncoder):
        raise ValueError(
            f"{strategy} needs a Hugging Face text encoder (source kind `hf`), got "
            f"{type(encoder).__name__}"
        )
    return encoder


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """The encoder's own pooling over the *real* tokens: ``cls`` (the first) or the masked mean,
    exactly as :meth:`HFTextEncoder.forward` pools."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def check_positions(encoder: HFTextEncoder, n_tokens: int, strategy: str) -> None:
    """Virtual tokens take positions: ``n_tokens + max_length`` must fit the position table."""
    limit = getattr(encoder.model.config, "max_position_embeddings", None)
    if limit is not None and n_tokens + encoder.max_length > limit:
        raise ValueError(
            f"{strategy}: n_tokens ({n_tokens}) + max_length ({encoder.max_length}) exceeds the "
            f"model's {limit} positions; lower one of them"
        )


class PromptTunedTextEncoder(HFTextEncoder):
    """A copy of a text encoder with ``n_tokens`` trained embeddings before every input.

    The attention mask covers the prompt (every real token attends to it), but the pooled
    features are the encoder's own pooling over the real tokens only: the prompt's output
    positions are dropped. Counting them in the mean would give the prompt a share of the
    features that depends on the sentence's length (``n / (n + length)``), and the pooled
    features would no longer be what the source encoder computes; the prompt reaches the
    features through attention, in every layer. ``cls`` pooling reads the ``[CLS]`` token, which
    now sits right after the prompt. Backbone state-dict keys are the source encoder's.
    """

    def __init__(self, base: HFTextEncoder, prompt: torch.Tensor) -> None:
        super().__init__(copy.deepcopy(base.model), base.tokenizer, base.pooling, base.max_length)
        self.model.requires_grad_(False)
        self.n_tokens = int(prompt.shape[0])
        self.prompt = nn.Parameter(prompt.detach().clone())

    def frozen_prefix(self, blocks: int) -> Any:
        return None  # the prompt enters below the first block: no block's output is reusable

    def trained_parameters(self) -> list[nn.Parameter]:
        return [self.prompt]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        words = self.model.get_input_embeddings()(ids)
        prompt = self.prompt.to(words.dtype).unsqueeze(0).expand(ids.shape[0], -1, -1)
        full_mask = torch.cat([mask.new_ones(ids.shape[0], self.n_tokens), mask], dim=1)
        hidden = self.model(
            inputs_embeds=torch.cat([prompt, words], dim=1), attention_mask=full_mask
        ).last_hidden_state
        return pool(hidden[:, self.n_tokens :], mask, self.pooling)


def initial_prompt(encoder: HFTextEncoder, n_tokens: int, init: str, seed: int) -> torch.Tensor:
    """Lester et al.'s initialisations: embeddings of ``n_tokens`` distinct vocabulary tokens
    (special tokens excluded) drawn with ``seed``, or uniform in [-0.5, 0.5]."""
    gen = torch.Generator().manual_seed(seed)
    weight = encoder.model.get_input_embeddings().weight
    assert isinstance(weight, torch.Tensor)  # a Parameter, not a submodule
    table = weight.detach()
    if init == "random":
        return torch.rand(n_tokens, table.shape[1], generator=gen) - 0.5
    special = set(getattr(encoder.tokenizer, "all_special_ids", []))
    candidates = torch.tensor([i for i in range(table.shape[0]) if i not in special])
    picked = candidates[torch.randperm(len(candidates), generator=gen)[:n_tokens]]
    return table[picked].float().clone()


class PrefixTunedTextEncoder(HFTextEncoder):
    """A copy of a text encoder whose every attention layer also attends to ``n_tokens`` trained
    keys and values (peft's prefix encoder), on a frozen backbone.

    Prefixes are keys and values only: the model outputs hidden states for the real tokens alone,
    so the encoder's pooling applies unchanged (``cls`` is position 0 of the output). The peft
    wrapper is kept as a plain attribute, not a submodule: its two parts are registered here as
    ``model`` (the backbone, under the source encoder's state-dict keys) and ``prefix_encoder``,
    so the state dict holds each weight once and ``forward(batch)`` keeps the encoder contract.
    """

    peft_model: PeftModel

    def __init__(self, base: HFTextEncoder, n_tokens: int, projection_dim: int | None, seed: int):
        from peft import PrefixTuningConfig, get_peft_model

        super().__init__(copy.deepcopy(base.model), base.tokenizer, base.pooling, base.max_length)
        config = PrefixTuningConfig(
            task_type="FEATURE_EXTRACTION",
            num_virtual_tokens=n_tokens,
            prefix_projection=projection_dim is not None,
            encoder_hidden_size=projection_dim or self.feature_dim,
        )
        with torch.random.fork_rng(devices=[]):  # peft draws the prefixes from the global RNG
            torch.manual_seed(seed)
            wrapped = get_peft_model(self.model, config)
        assert wrapped.base_model is self.model
        object.__setattr__(self, "peft_model", wrapped)  # not registered: see the docstring
        self.prefix_encoder = wrapped.prompt_encoder[wrapped.active_adapter]
        self.n_tokens = n_tokens

    def frozen_prefix(self, blocks: int) -> Any:
        return None  # every layer reads its own prefix

    def trained_parameters(self) -> list[nn.Parameter]:
        return list(self.prefix_encoder.parameters())

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]
        hidden = self.peft_model(input_ids=batch["input_ids"], attention_mask=mask)
        return pool(hidden.last_hidden_state, mask, self.pooling)


class PromptParams(StrategyParams):
    # Lester et al.: 20 tokens get most of the gain; more help little below XXL models.
    n_tokens: int = Field(20, ge=1, le=512)
    init: Literal["vocab", "random"] = "vocab"  # vocab: the paper's better initialisation


class PrefixParams(StrategyParams):
    n_tokens: int = Field(10, ge=1, le=512)  # Li & Liang's table-to-text prefix length
    # None: the prefixes are the parameters (peft's default, as in P-tuning v2); a size: Li &
    # Liang's reparameterisation, an MLP of that hidden size from n_tokens x hidden embeddings.
    projection_dim: int | None = Field(None, ge=1, le=65_536)


@runtime_checkable
class PromptedEncoder(Protocol):
    """An encoder whose only trained parameters are its own prompts (the backbone is frozen)."""

    def trained_parameters(self) -> list[nn.Parameter]: ...


class ContinuousPromptStrategy(TrainableStrategy[ParamsT]):
    """Shared by the prompt-based strategies: the encoder's own trained parameters plus the head.

    ``trains_encoder`` is True although the backbone's weights stay bit-identical: the features
    the head reads are a function the strategy learns on the target (the prompts steer every
    layer), not the source's frozen features, so the comparison "the same algorithm without the
    source" is training the architecture from scratch, as for LoRA and fine-tuning (False would
    pair it with a random-init twin, which only frozen-feature strategies have), and forgetting
    is measured on the prompted encoder, whose features the source head then reads. A checkpoint
    holds the unchanged backbone under the source's keys plus the prompt's own keys: it loads
    into this strategy's encoder, not into the plain architecture.
    """

    default_search: ClassVar[dict[str, Dimension]] = PROMPT_SEARCH

    @classmethod
    def trains_encoder(cls, params: ParamsT) -> bool:
        return True

    @classmethod
    def supports(cls, source: Source) -> str | None:
        return None if source.modality == "text" else f"{cls.name} needs a text encoder"

    def param_groups(
        self, ctx: CellContext[ParamsT], model: Classifier, trial: Trial
    ) -> list[dict[str, Any]]:
        encoder = model.encoder
        assert isinstance(encoder, PromptedEncoder), "a prompt strategy built this encoder"
        prompts = encoder.trained_parameters()
        return [
            {"params": prompts, "lr_mult": 1.0, "name": "prompt"},
            {"params": list(model.head.parameters()), "lr_mult": 1.0, "name": "head"},
        ]


@register_strategy("prompt_tuning")
class PromptTuning(ContinuousPromptStrategy[PromptParams]):
    """Soft prompt (Lester et al. 2021) before the input embeddings of a frozen HF text encoder,
    plus a new linear head; prompt positions are excluded from the pooled features."""

    Params = PromptParams

    def encoder(self, ctx: CellContext[PromptParams]) -> Encoder:
        p = ctx.params
        base = text_encoder(ctx.build_encoder(ctx.pretrained), self.name)
        check_positions(base, p.n_tokens, self.name)
        return PromptTunedTextEncoder(base, initial_prompt(base, p.n_tokens, p.init, ctx.seed))

    def describe(self, ctx: CellContext[PromptParams]) -> dict[str, Any]:
        return {"prompt_tokens": ctx.params.n_tokens}


@register_strategy("prefix_tuning")
class PrefixTuning(ContinuousPromptStrategy[PrefixParams]):
    """Trained key/value prefixes at every attention layer (Li & Liang 2021, through peft) of a
    frozen HF text encoder, plus a new linear head."""

    Params = PrefixParams

    def encoder(self, ctx: CellContext[PrefixParams]) -> Encoder:
        p = ctx.params
        base = text_encoder(ctx.build_encoder(ctx.pretrained), self.name)
        check_positions(base, p.n_tokens, self.name)
        return PrefixTunedTextEncoder(base, p.n_tokens, p.projection_dim, ctx.seed)

    def describe(self, ctx: CellContext[PrefixParams]) -> dict[str, Any]:
        return {"prefix_tokens": ctx.params.n_tokens}
