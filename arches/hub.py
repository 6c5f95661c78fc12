"""Whether the Hugging Face Hub can be used: the one check every Hub caller makes first
(`data=hf`, `arches import-hf <hub name>`, lm-eval's own tasks in `arches eval`).

The libraries behind them (`datasets`, `huggingface_hub`) retry for most of a minute
before failing, so one TCP connect, 5 s at most, decides first. Behind a proxy only the
proxy knows: the library then tries.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

TRUE = ("1", "true", "yes", "on")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
CONNECT_TIMEOUT_S = 5.0
# The connection failures of requests, httpx and huggingface_hub, by class name (none of them
# needs importing to recognise its own).
CONNECTION_ERRORS = {
    "ConnectError", "ConnectTimeout", "TransportError", "OfflineModeIsEnabled", "ReadTimeout",
    "LocalEntryNotFoundError",
}  # fmt: skip


def offline() -> bool:
    """HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set to a true value."""
    return any(os.environ.get(var, "").strip().lower() in TRUE for var in OFFLINE_VARIABLES)


def unreachable(timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why the Hub cannot be used, or None when it can (or a proxy is set)."""
    if offline():
        return "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set"
    if any(os.environ.get(var) for var in PROXY_VARIABLES):
        return None
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"{host} cannot be reached ({error.strerror or type(error).__name__})"
    return None


def is_connection_error(error: BaseException) -> bool:
    """A library's error that means the Hub could not be reached (not a missing dataset)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return isinstance(error, (ConnectionError, TimeoutError)) or bool(names & CONNECTION_ERRORS)
