import pytest

import dspex


@pytest.fixture(autouse=True)
def _quiet_info_logs():
    dspex.logging.set_verbosity(dspex.logging.WARNING)
    yield
