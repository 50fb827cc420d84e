"""A real HTTP server on a thread, for the download tests."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from socketserver import BaseServer
from typing import Iterator


@contextmanager
def serving(srv: BaseServer) -> Iterator[BaseServer]:
    """Serve ``srv`` on a daemon thread for the block; shut it down and close it after."""
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
