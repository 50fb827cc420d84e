"""A TCP connect to a Ray address before Ray gets it (Ray retries an unreachable one for minutes); no Ray import."""

from __future__ import annotations

import re
import socket
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 5.0


def _connect(target: tuple[str, int], what: str, hint: str, timeout_s: float) -> None:
    try:
        with socket.create_connection(target, timeout=timeout_s):
            return
    except OSError as exc:
        reason = (exc.strerror or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)).lower()
        raise ConnectionError(f"cannot connect to {what}: {reason} ({hint})") from None


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ``ConnectionError`` naming ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``; ``auto`` and ``local``
    are not checked) when nothing accepts a TCP connection there."""
    m = re.match(r"^(?:ray://)?\[?([^\]\s/]+?)\]?:(\d+)/?$", address.strip())
    if m:
        _connect((m[1], int(m[2])), f"the Ray cluster at {address}",
                 "is the head running? its GCS port is 6379 unless `ray start --head --port` said otherwise",
                 timeout_s)


def check_dashboard(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ``ConnectionError`` naming ``url`` when the Ray dashboard (Jobs API) does not accept connections."""
    parts = urlsplit(url)
    if parts.hostname:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        _connect((parts.hostname, port), f"the Ray dashboard at {url}",
                 "is the head running with its dashboard? the Jobs API is on port 8265 by default", timeout_s)
