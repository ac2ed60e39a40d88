"""Sub-command implementations: one module per ``atlbench`` sub-command.

``atlbench.cli`` parses the command line and calls these; they in turn call library modules
(store, views, recommend, ...), which never import from here.
"""

from __future__ import annotations

__all__: list[str] = []
