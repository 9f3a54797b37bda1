import os

import pytest

import dspex


@pytest.fixture(autouse=True)
def _quiet_info_logs():
    dspex.logging.set_verbosity(dspex.logging.WARNING)
    yield


@pytest.fixture(scope="session")
def lm_server():
    """One local OpenAI-compatible server for the session's LM tests (reset before each use)."""
    from lmserver import LMServer, binary

    exe = binary()
    if exe is None:
        pytest.fail("the LM tests need dspex-testlm: cargo build --release -p dspex-testlm") if os.environ.get("CI") else pytest.skip("dspex-testlm is not built")
    server = LMServer(exe=exe)
    yield server
    server.stop()


@pytest.fixture
def lm(lm_server):
    """The shared server with default behaviour and zeroed counters."""
    lm_server.behave()
    lm_server.reset()
    return lm_server
