"""Local checkpoints: a timm architecture plus weights from safetensors (or a weights-only .pt).

No pickles from strangers: ``.pt``/``.pth`` files load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from atlbench._digests import file_digest
from atlbench.errors import SourceError
from atlbench.registry import register_source
from atlbench.sources._base import Encoder, Source, SourceKind, SourceOptions
from atlbench.sources.timm import _known_arch, create_timm, timm_arch_label


class CheckpointParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    arch: str
    path: str
    input_size: int | None = Field(None, ge=8, le=1024)
    num_classes: int | None = Field(None, ge=0)

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str) -> str:
        return _known_arch(value)

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str) -> str:
        """A missing file is a suite error (exit 2) at load time, not a failure in every cell."""
        if not Path(value).expanduser().is_file():
            raise ValueError(f"checkpoint file {value!r} does not exist")
        return value


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights safely: safetensors, or torch.load with ``weights_only=True``."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"checkpoint {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise SourceError(f"checkpoint {str(path)!r} could not be read safely: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SourceError(f"checkpoint {str(path)!r} is not a flat state dict of tensors")
    return state


def apply_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load weights, tolerating a missing/extra classifier but nothing else."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    usable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    missing = [k for k in own if k not in usable]
    head_names = ("fc.", "head.", "classifier.", "last_linear.")
    serious = [k for k in missing if not k.startswith(head_names) and "num_batches" not in k]
    if serious:
        raise SourceError(
            f"checkpoint {origin!r} does not fit the architecture: {len(serious)} missing weights "
            f"(first: {serious[0]!r}); check `arch`"
        )
    model.load_state_dict(usable, strict=False)


@register_source("checkpoint")
class CheckpointSource(SourceKind[CheckpointParams]):
    """``checkpoint: {arch, path}``: a timm architecture with weights from a local file.

    The fingerprint is the file's sha256 (memoised by stat), not its path or mtime: ``touch``
    re-runs nothing, a rewritten file re-runs everything that used it, and a moved file keeps its
    results.
    """

    Params = CheckpointParams

    @classmethod
    def resolve(cls, source_id: str, params: CheckpointParams, options: SourceOptions) -> Source:
        p = params

        def builder(pretrained: bool) -> Encoder:
            encoder = create_timm(p.arch, False, num_classes=p.num_classes, input_size=p.input_size)
            if pretrained:
                apply_state_dict(encoder.model, load_state_dict(p.path), p.path)
            return encoder

        identity = p.model_dump(exclude={"path"})
        return Source(
            id=source_id,
            kind=cls.name,
            modality="image",
            arch=timm_arch_label(p.arch, p.input_size),
            fingerprint={"checkpoint": identity, "weights": file_digest(Path(p.path).expanduser())},
            params=p,
            builder=builder,
            reported_accuracy=options.reported_accuracy,
            eval_on=options.eval_on,
        )
