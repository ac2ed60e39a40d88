"""Hub access that fails fast and clearly when there is no network.

An unreachable Hugging Face hub costs ~50 s of retries per call; a 2-second socket probe turns that
into an immediate, explained failure (and lets locally cached files resolve offline).
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache

from atlbench.errors import HubUnavailableError

HUB_HOST = "huggingface.co"


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the hub answers a TCP connect; honours ``HF_HUB_OFFLINE``."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", f"https://{HUB_HOST}")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def prepare_hub_access() -> bool:
    """Switch the HF libraries to offline mode when the hub is unreachable; return reachability."""
    reachable = hub_reachable()
    if not reachable:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    return reachable


def offline_error(what: str, name: str, local_hint: str) -> HubUnavailableError:
    """The one-line error for a hub name that is neither reachable nor cached locally."""
    return HubUnavailableError(
        f"{what} {name!r} is not in the local cache and the Hugging Face hub is unreachable "
        f"(offline or HF_HUB_OFFLINE=1); {local_hint}"
    )
