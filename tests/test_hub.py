"""One Hub-reachability check (`arches.hub`) serves data=hf, import-hf and lm-eval's own tasks."""

import socket

import pytest

from arches import hub

CLEAR = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", *hub.PROXY_VARIABLES)


@pytest.fixture
def online_env(monkeypatch):
    for var in CLEAR:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("var", hub.OFFLINE_VARIABLES)
def test_either_offline_variable_makes_the_hub_unusable(online_env, var):
    online_env.setenv(var, "1")
    assert hub.offline()
    assert hub.unreachable() == "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set"


def test_a_closed_port_is_named_and_a_proxy_defers_to_the_library(online_env):
    with socket.socket() as listener:  # a port nothing listens on once closed
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    online_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    reason = hub.unreachable(timeout=1.0)
    assert reason is not None and reason.startswith("127.0.0.1 cannot be reached")
    online_env.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub.unreachable(timeout=1.0) is None


def test_a_listening_endpoint_is_reachable(online_env):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        online_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        assert hub.unreachable(timeout=1.0) is None


def test_the_callers_share_the_check(online_env):
    """data=hf, import-hf and `arches eval` name the same reason (they had drifted apart)."""
    from arches.data.hf import HFSource
    from arches.errors import UserError
    from arches.interop.checkpoint import resolve_source

    online_env.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set"):
        HFSource("some/dataset").documents()
    with pytest.raises(UserError, match="HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set"):
        resolve_source("some/model")


def test_connection_errors_are_told_from_missing_datasets():
    class ConnectTimeout(Exception):  # httpx's name, recognised without importing httpx
        pass

    assert hub.is_connection_error(ConnectTimeout()) and hub.is_connection_error(TimeoutError())
    assert not hub.is_connection_error(FileNotFoundError("no such dataset"))
