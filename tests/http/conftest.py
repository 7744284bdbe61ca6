"""pytest fixtures for the black-box tests of `flashgen serve` (helpers live in fg_http.py)."""
import signal

import pytest

from fg_http import Server


@pytest.fixture(scope="session")
def server():
    s = Server("--max-concurrent-requests", "64")
    yield s
    rc = s.stop()
    assert rc == 0, "server did not exit cleanly:\n" + "\n".join(s.lines[-30:])


@pytest.fixture
def start_server():
    """Factory for servers with their own flags; all are stopped at the end of the test."""
    started = []

    def start(*flags, **kw):
        s = Server(*flags, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop(signal.SIGKILL if s.proc.poll() is None else signal.SIGTERM)


