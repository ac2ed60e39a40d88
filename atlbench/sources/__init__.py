"""Source models: pre-trained encoders and their random-init twins (the scratch baseline).

Each kind (timm, hf, checkpoint, zoo) registers itself in its own module with
``@register_source``; :mod:`atlbench._components` lists the built-in modules. This package only
re-exports the shared types, so importing it loads no model library.
"""

from atlbench.registry import register_source
from atlbench.sources._base import Encoder, Source, SourceKind, SourceOptions, images_to_tensor

__all__ = [
    "Encoder",
    "Source",
    "SourceKind",
    "SourceOptions",
    "images_to_tensor",
    "register_source",
]
