"""``license.gate``: only rows whose license allows an open-source-compliant release go on.
Design: docs/architecture.md, "Data flow" (license.gate)."""

from __future__ import annotations

from typing import Any, ClassVar

from granary_pipe import licenses
from granary_pipe.registry import register
from granary_pipe.stages.filters.base import FilterStage


@register("license.gate")
class LicenseGate(FilterStage):
    """Rejects rows whose ``license`` does not allow an open-source-compliant release."""

    RULES: ClassVar[tuple[str, ...]] = ("license",)
    COLUMNS: ClassVar[tuple[str, ...]] = ("license",)

    batch_size: int = 4096

    def rules(self, row: dict[str, Any]) -> list[str]:
        why = licenses.reason(row["license"] or licenses.UNKNOWN)
        return [] if why is None else [f"license:{why}"]
