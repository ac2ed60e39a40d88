"""Hub access that fails fast and clearly when there is no network.

An unreachable Hugging Face hub costs ~50 s of retries per call; a 2-second socket probe turns that
into an immediate, explained failure. Nothing here changes the environment: loaders pass
``local_files_only`` (or load a cached file directly) when the hub is out of reach.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache

from atlbench.errors import HubUnavailableError

HUB_HOST = "huggingface.co"
_TRUE = ("1", "true", "yes", "on")


def offline_by_environment() -> bool:
    """The user switched the Hugging Face libraries offline (``HF_HUB_OFFLINE`` and friends)."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    return any(os.environ.get(n, "0").lower() in _TRUE for n in names)


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the hub answers a TCP connect; honours ``HF_HUB_OFFLINE``."""
    if offline_by_environment():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", f"https://{HUB_HOST}")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def offline_error(what: str, name: str, local_hint: str) -> HubUnavailableError:
    """The one-line error for a hub name that is neither reachable nor cached locally."""
    return HubUnavailableError(
        f"{what} {name!r} is not in the local cache and the Hugging Face hub is unreachable "
        f"(offline or HF_HUB_OFFLINE=1); {local_hint}"
    )
