"""OpenAI-compatible chat-completions client: one POST per conversation, ``concurrency`` at once, retried by
urllib3 under :mod:`granary_pipe.retry`; any other error fails that item only (``None``)."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from granary_pipe.llm.base import Backend, Messages, OpenAIOptions
from granary_pipe.retry import RETRY_STATUS, http_retry

log = logging.getLogger(__name__)


class OpenAIBackend(Backend):
    def __init__(self, options: OpenAIOptions) -> None:
        self.options = options
        self.url = options.base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        key = os.environ.get(options.api_key_env) if options.api_key_env else None
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="llm-openai")

    def generate(self, prompts: list[Messages], max_new_tokens: int) -> list[str | None]:
        return list(self._pool.map(lambda m: self.complete(m, max_new_tokens), prompts))

    def complete(self, messages: Messages, max_new_tokens: int) -> str | None:
        """One conversation → its completion, or None after the retries are spent."""
        body: dict[str, Any] = {"model": self.options.model, "messages": messages, "temperature": 0,
                                "max_tokens": max_new_tokens}
        try:
            resp = self._session().post(self.url, json=body, headers=self.headers, timeout=self.options.timeout_s)
        except requests.RequestException as exc:  # connection errors and timeouts: after the retries
            log.warning("LLM request failed after %d attempts: %s", self.options.max_retries + 1, exc)
            return None
        if resp.status_code == 200:
            return parse(resp)
        why = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
        if resp.status_code in RETRY_STATUS:
            log.warning("LLM request failed after %d attempts: %s", self.options.max_retries + 1, why)
        else:
            log.warning("LLM request failed, not retried: %s", why)
        return None

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            adapter = HTTPAdapter(max_retries=http_retry(self.options.max_retries, self.options.backoff_s,
                                                         self.options.backoff_max_s))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        return session

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def parse(resp: requests.Response) -> str | None:
    """``choices[0].message.content`` of a chat-completions answer; None when malformed."""
    try:
        data: Any = resp.json()
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("LLM answer is not a chat completion (%s): %r", type(exc).__name__, resp.text[:200])
        return None
    if not isinstance(content, str):
        log.warning("LLM answer has no text content: %r", resp.text[:200])
        return None
    return content
