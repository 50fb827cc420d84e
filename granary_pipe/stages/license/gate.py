"""License gate: only rows whose license allows an open-source-compliant release go on.

Runs right after decode in the demo pipeline (so rejected rows still carry their duration) and
before VAD and ASR, so no model time is spent on audio that can never be released;
the rows still reach ``rejected.parquet`` with ``license:<SPDX id>`` (``license:unknown`` for
strings the registry does not recognise). It is a ``FilterStage`` with one rule, ``license``:
the reason also goes to ``flags`` and is counted in the unit's counters.
"""

from __future__ import annotations

from typing import Any, ClassVar

from granary_pipe import licenses
from granary_pipe.registry import register
from granary_pipe.stages.filters.base import FilterStage


@register("license.gate")
class LicenseGate(FilterStage):
    """Rejects rows whose ``license`` is not open-source compliant (or unknown)."""

    RULES: ClassVar[tuple[str, ...]] = ("license",)
    COLUMNS: ClassVar[tuple[str, ...]] = ("license",)

    batch_size: int = 4096

    def rules(self, row: dict[str, Any]) -> list[str]:
        """``license:<SPDX id>`` unless the license allows an open release."""
        lic = row["license"] or licenses.UNKNOWN
        return [] if licenses.allows_release(lic) else [f"license:{lic}"]
