"""Local checkpoints: a timm architecture plus weights from safetensors (or a weights-only .pt).

No pickles from strangers: ``.pt``/``.pth`` files load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from atlbench.errors import SourceError


class CheckpointParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arch: str
    path: str
    input_size: int | None = Field(None, ge=8, le=1024)
    num_classes: int | None = Field(None, ge=0)

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
