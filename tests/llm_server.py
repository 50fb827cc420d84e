"""A stand-in OpenAI-compatible LLM server in a process of its own: ``python tests/llm_server.py [LOG]``.

It runs ``llm_fixtures.FakeOpenAI`` (the same request handling the in-process tests use) with
deterministic answers that pass the product's guards, so a pipeline run against it releases
restored punctuation and translations:

- punctuation (a system prompt, then the transcript as the user message): the transcript's words,
  the first one and every ``i`` capitalised, ending with ``!`` (so the result differs from
  Whisper's own punctuation and the guard still sees the same words);
- translation (the EuroLLM prompt ``Translate the following X source text to Y: ...``): a fixed
  sentence in Y (:data:`TRANSLATIONS`).

The first line on stdout is the base URL (``http://127.0.0.1:PORT/v1``); the server stops when its
stdin closes (the test ended, or died) or on SIGTERM. With ``LOG``, each request appends one JSON
line ``{"task": "pnc"|"translate", "text": ...}``. :func:`served` starts and stops it for a test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

if __package__:
    from tests import llm_fixtures as lf
else:  # run as a script: tests/ is sys.path[0]
    import llm_fixtures as lf

TRANSLATIONS = {
    "German": "Heute Morgen habe ich den Bus verpasst und musste zur Arbeit laufen.",
    "English": "This morning I missed the bus and had to walk to work.",
    "French": "Ce matin, j'ai raté le bus et j'ai dû aller au travail à pied.",
}
"""Target language name (as the prompt spells it) → the translation the server gives."""

_TRANSLATE = re.compile(r"^Translate the following (\w[\w ]*) source text to (\w[\w ]*):\n[^\n]*: (.*)\n", re.S)


def restore(text: str) -> str:
    """The stand-in model's punctuation: same words, capitalised, exclaimed."""
    words = [w.strip(".,;:!?\"'").lower() for w in text.split()]
    words = ["I" if w == "i" else w for w in words if w]
    return (" ".join(words)[:1].upper() + " ".join(words)[1:] + "!") if words else ""


def answer(body: dict) -> tuple[str, str, str]:
    """``(task, source text, completion)`` for one chat-completions request body."""
    user = lf.user_text(body)
    m = _TRANSLATE.match(user)
    if m:
        return "translate", m[3], TRANSLATIONS.get(m[2], "")
    return "pnc", user, restore(user)


def main(argv: list[str]) -> int:
    """Serve until stdin closes; print the base URL first."""
    log = Path(argv[0]) if argv else None
    lock = threading.Lock()

    def reply(body: dict, attempt: int) -> lf.Reply:
        task, text, content = answer(body)
        if log is not None:
            with lock, open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"task": task, "text": text}, ensure_ascii=False) + "\n")
        return lf.Reply(content=content)

    with lf.FakeOpenAI(reply) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()  # returns at EOF: the parent closed the pipe or exited
    return 0


@contextmanager
def served(log: Path | None = None) -> Iterator[str]:
    """Start the server in its own process on 127.0.0.1; yields its base URL; stops it at the end."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), *([str(log)] if log else [])]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"stand-in LLM server did not start (exit code {proc.poll()}, said {url!r})")
        yield url
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
