"""Frozen-prefix caching: train the top of a network on stored outputs of its frozen bottom.

When a strategy trains only the top blocks (``finetune`` with ``layers: K`` or ``head``), the
bottom blocks compute the same outputs for the same inputs in every epoch of every trial. They are
computed once per (source weights, target, split, cut), and the trainable suffix trains on them.

When this is exact: the frozen blocks are in eval mode (their BatchNorm statistics and dropout
fixed: :func:`atlbench.train.train_mode` puts every module whose parameters are all frozen in
eval mode, which is what "frozen" means), the inputs are not augmented, and nothing else reads
the frozen blocks during training (no CORAL or auxiliary-task forward passes). Under those
conditions the cached and uncached paths compute the same function; the tests check the logits
and the selected model agree to float tolerance. Anywhere else the tuner falls back to the full
forward pass and the record says why.

Supported: Hugging Face encoders built as ``embeddings`` followed by a ``ModuleList`` of layers
(BERT, MiniLM, RoBERTa, MPNet, ...). The prefix runs the real model and stops after the cut
(a forward hook); the suffix swaps the embeddings for a module that returns the cached
activations and runs only the remaining layers, so the model's own attention-mask handling and
pooling are used unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from atlbench._inputs import TensorCache

ACTIVATIONS = TensorCache(1 << 30)  # cached prefix outputs, per process
PREFIX_KEY = "_prefix"


class _Stop(Exception):
    """Raised by the capture hook: the rest of the forward pass is not needed."""


class _Replay(nn.Module):
    """Stands in for the embeddings: returns the batch's cached activations."""

    def __init__(self) -> None:
        super().__init__()
        self.current: torch.Tensor | None = None

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        assert self.current is not None, "no cached activations were given for this batch"
        return self.current


class _Passthrough(nn.Module):
    """Stands in for a frozen layer: returns its input hidden states unchanged (as a 1-tuple
    where the model's layers return tuples, as transformers 4.x does)."""

    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return (hidden_states,) if self.as_tuple else hidden_states


class FrozenPrefix:
    """The first ``blocks`` of a Hugging Face encoder (embeddings + ``blocks - 1`` layers)."""

    def __init__(self, model: nn.Module, layers_path: str, blocks: int) -> None:
        self.model = model
        self.layers_path = layers_path
        self.blocks = blocks
        self.layers: nn.ModuleList = model.get_submodule(layers_path)  # type: ignore[assignment]
        self.embeddings: nn.Module = model.embeddings  # type: ignore[assignment]
        self.frozen = list(self.layers)[: blocks - 1]
        self.replay = _Replay()
        self.active = False
        self.as_tuple = False

    @property
    def description(self) -> str:
        return f"embeddings + {len(self.frozen)} of {len(self.layers)} layers cached"

    @torch.inference_mode()
    def compute(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The prefix's output for a batch: the real model, stopped after the cut."""
        if self.active:
            self._swap(False)
            try:
                return self.compute(batch)
            finally:
                self._swap(True)
        captured: list[torch.Tensor] = []
        last = self.embeddings if self.blocks == 1 else self.layers[self.blocks - 2]

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _Stop

        probe = self.layers[0].register_forward_hook(
            lambda _m, _i, out: setattr(self, "as_tuple", isinstance(out, tuple))
        )

        handle = last.register_forward_hook(hook)
        was_training = self.model.training
        self.model.eval()
        try:
            self.model(**batch)
        except _Stop:
            pass
        finally:
            handle.remove()
            probe.remove()
            self.model.train(was_training)
        return captured[0].detach().clone()

    def _swap(self, cached: bool) -> None:
        """Put the replay module and pass-through layers in (``cached``), or the originals back.

        The trained layers keep their names and positions, so parameter groups, layer-wise
        decay and state-dict keys of what trains are the same as without the cache."""
        self.model.embeddings = self.replay if cached else self.embeddings
        for i, layer in enumerate(self.frozen):
            self.layers[i] = _Passthrough(self.as_tuple) if cached else layer
        self.active = cached

    @contextmanager
    def installed(self) -> Iterator[FrozenPrefix]:
        """While active, the model starts from cached activations at the cut."""
        self._swap(True)
        try:
            yield self
        finally:
            self._swap(False)
            self.replay.current = None

    def run_model(self, batch: dict[str, torch.Tensor]) -> Any:
        """Call the model on a batch that carries its cached activations."""
        batch = dict(batch)
        self.replay.current = batch.pop(PREFIX_KEY)
        return self.model(**batch)


def layers_path(model: nn.Module) -> str | None:
    """Where an HF model keeps its ``ModuleList`` of transformer layers, if it is a plain one."""
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList) and hasattr(model, "embeddings"):
            return path
    return None


def frozen_blocks(
    block_names: list[str], named: list[tuple[str, nn.Parameter]], trained: set[int]
) -> int:
    """How many leading blocks of ``block_names`` have every parameter frozen (not in
    ``trained``, a set of parameter ids). A parameter outside every block belongs to the block
    before it (a stem to the first block, a final norm or pooler to the last)."""
    owner: list[tuple[int, nn.Parameter]] = []
    current = 0
    for name, prm in named:
        for i, block in enumerate(block_names):
            if name == block or name.startswith(block + "."):
                current = i
                break
        owner.append((current, prm))
    for i in range(len(block_names)):
        if any(id(p) in trained for j, p in owner if j == i):
            return i
    return len(block_names)
