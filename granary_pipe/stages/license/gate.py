"""License gate: only rows whose license allows an open-source-compliant release go on.

Runs right after decode in the demo pipeline (so rejected rows still carry their duration) and
before VAD and ASR, so no model time is spent on audio that can never be released;
the rows still reach ``rejected.parquet`` with ``license:<SPDX id>`` (``license:unknown`` for
strings the registry does not recognise).
"""

from __future__ import annotations

import pyarrow as pa

from granary_pipe import licenses, schema
from granary_pipe.registry import register
from granary_pipe.stage import Stage


@register("license.gate")
class LicenseGate(Stage):
    """Rejects rows whose ``license`` is not open-source compliant (or unknown)."""

    batch_size: int = 4096

    def process(self, active: pa.Table) -> pa.Table:
        ids = active.column("license").to_pylist()
        return schema.reject(active, [None if licenses.allows_release(i or licenses.UNKNOWN) else f"license:{i or licenses.UNKNOWN}" for i in ids])
