"""The one retry policy: exponential backoff with jitter, capped, for every network client: HTTP requests
through urllib3's ``Retry`` (:func:`http_retry`), loops that retry whole operations with :func:`backoff_delay`."""

from __future__ import annotations

import random

from urllib3.util import Retry

RETRY_STATUS = frozenset({429, *range(500, 600)})
"""HTTP statuses worth another try: too many requests, server errors."""


def backoff_delay(retry: int, first_s: float, max_s: float) -> float:
    """Seconds to wait before retry ``retry`` (0-based): ``first_s * 2**retry``, capped at ``max_s``,
    jittered to 50-100 % (clients that failed together do not retry together)."""
    return min(max_s, first_s * 2**retry) * (0.5 + 0.5 * random.random())


class _PolicyRetry(Retry):
    """urllib3's Retry waiting :func:`backoff_delay` (the first retry too) and a ``Retry-After``
    of at most ``backoff_max``."""

    def get_backoff_time(self) -> float:
        errors = len(self.history)
        return backoff_delay(errors - 1, self.backoff_factor, self.backoff_max) if errors else 0.0

    def get_retry_after(self, response) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, self.backoff_max)


def http_retry(retries: int, first_s: float, max_s: float) -> Retry:
    """The policy for ``requests``/urllib3 (``HTTPAdapter(max_retries=...)``): up to ``retries``
    retries of any method after a timeout, a connection error, HTTP 429 or 5xx (a ``Retry-After``
    honoured up to ``max_s``); the last answer is returned when they are spent."""
    return _PolicyRetry(total=retries, backoff_factor=first_s, backoff_max=max_s, status_forcelist=RETRY_STATUS,
                        allowed_methods=None, raise_on_status=False, respect_retry_after_header=True)
