"""Text architectures of the offline zoo: a Hugging Face encoder, randomly initialised here.

A zoo text model is the architecture (config and tokenizer) of a packaged Hugging Face model,
optionally cut to its first ``layers`` transformer layers, with *random* weights drawn from the
recipe's seed; :mod:`atlbench.sources.zoo` then pre-trains it on a generated task. Reading the
architecture from the packaged copy keeps it offline, and building it with
:func:`atlbench.sources.hf.create_hf` (``pretrained=False``) makes the zoo model and an ``hf:``
source of the same model and depth one architecture, so they share one scratch baseline.
"""

from __future__ import annotations

import torch
from torch import nn

from atlbench.sources.hf import HFParams, HFTextEncoder, create_hf

# zoo arch name -> the packaged Hugging Face model whose config and tokenizer it uses
TEXT_ARCHS: dict[str, str] = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",  # BERT, 6 x 384 (Wang et al. 2020)
}
DEFAULT_MAX_LENGTH = 128  # the ``hf:`` source's default, so equal recipes tokenise alike


class ZooTextEncoder(HFTextEncoder):
    """A zoo-trained text encoder that keeps its pre-training head (LEEP/NCE, forgetting)."""

    def __init__(self, base: HFTextEncoder, num_classes: int | None) -> None:
        super().__init__(base.model, base.tokenizer, base.pooling, base.max_length)
        self.source_classifier = nn.Linear(self.feature_dim, num_classes) if num_classes else None

    def source_logits(self, features: torch.Tensor) -> torch.Tensor | None:
        return None if self.source_classifier is None else self.source_classifier(features)

    def source_head(self) -> nn.Module | None:
        return self.source_classifier


def hf_params(arch: str, layers: int | None, max_length: int | None) -> HFParams:
    """The ``hf:`` parameters of the same architecture (mean pooling, as sentence-transformers)."""
    return HFParams(
        model=TEXT_ARCHS[arch],
        pooling="mean",
        max_length=max_length or DEFAULT_MAX_LENGTH,
        layers=layers,
    )


def text_arch_label(arch: str, layers: int | None) -> str:
    """The arch label an ``hf:`` source of the same model and depth gets (see the module doc)."""
    return f"hf:{TEXT_ARCHS[arch]}@main" + (f"/{layers}" if layers else "")


def create_zoo_text(
    arch: str, layers: int | None, max_length: int | None, num_classes: int | None = None
) -> ZooTextEncoder:
    """A randomly initialised zoo text encoder (seed the RNG first for reproducible weights)."""
    base = create_hf(hf_params(arch, layers, max_length), pretrained=False)
    return ZooTextEncoder(base, num_classes)
