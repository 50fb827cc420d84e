"""License gate: only rows whose license allows an open-source-compliant release go on.

Runs right after decode in the demo pipeline (so rejected rows still carry their duration) and
before VAD and ASR, so no model time is spent on audio that can never be released;
the rows still reach ``rejected.parquet`` with ``license:<reason>`` (:func:`granary_pipe.licenses.reason`):

- ``license:<SPDX id>``: a registry license that is not open-source compliant (``CC-BY-NC-4.0``;
  for an expression, the operand that forbids it: ``CC-BY-4.0 AND CC-BY-NC-4.0`` gives
  ``license:CC-BY-NC-4.0``);
- ``license:copyleft_software``: GPL, LGPL, AGPL or MPL on data (the registry's policy);
- ``license:version_unspecified``: a Creative Commons license without its version (``CC-BY``)
  that the source manifest's ``license_map`` does not map;
- ``license:unparseable``: a string written as an SPDX expression that does not parse;
- ``license:unknown``: anything else the registry does not recognise.

``MIT OR Apache-2.0`` passes (one operand allows a release), ``CC-BY-4.0 AND CC0-1.0`` too (both
do), ``Apache-2.0 WITH LLVM-exception`` as Apache-2.0. It is a ``FilterStage`` with one rule,
``license``: the reason also goes to ``flags`` and is counted in the unit's counters.
"""

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
        """``license:<reason>`` unless the row's license allows an open release."""
        why = licenses.reason(row["license"] or licenses.UNKNOWN)
        return [] if why is None else [f"license:{why}"]
