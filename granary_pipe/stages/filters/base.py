"""The filter base: a filter writes only its rules; flagging, rejecting and counting are built in.

In the manner of datatrove's ``BaseFilter``: a subclass declares ``RULES`` (every reason it can
give, in the order that decides ``drop_reason``) and implements ``rules(row) -> list[str]``, the
reasons a row breaks. :class:`FilterStage` then, for each active row:

* appends every reason that fired to ``flags`` (in ``RULES`` order),
* sets ``drop_reason`` to the first of them that may reject (``FLAG_ONLY`` rules only flag),
* and, as every stage does (``Stage.apply``), counts rows in and rows rejected / flagged per
  rule into the unit's counters (:mod:`granary_pipe.counters`).

A reason is declared when it equals a rule of ``RULES`` or extends one by ``:<detail>``
(``text_lang:mismatch:de`` under ``text_lang:mismatch``, ``license:CC-BY-NC-4.0`` under
``license``); an undeclared reason is an error naming the stage, so ``RULES`` stays true.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa

from granary_pipe import counters, schema
from granary_pipe.stage import Stage


class FilterStage(Stage):
    """Base of stages that reject rows by named rules (not registered itself).

    Class attributes:
        RULES: every reason (or reason prefix) the filter gives, in the order that decides
            ``drop_reason`` when several fire.
        FLAG_ONLY: rules of ``RULES`` that are recorded in ``flags`` but never reject.
        COLUMNS: the row columns ``rules`` reads (None: every column but the audio samples).
    """

    FLAG_ONLY: ClassVar[tuple[str, ...]] = ()
    COLUMNS: ClassVar[tuple[str, ...] | None] = None

    def rules(self, row: dict[str, Any]) -> list[str]:
        """Reasons ``row`` (a dict of ``COLUMNS``) breaks, in any order; empty when it passes."""
        raise NotImplementedError

    def fired(self, rows: list[dict[str, Any]]) -> list[list[str]]:
        """Reasons of each row, deduplicated and in ``RULES`` order. Override to judge rows in bulk."""
        return [self._ordered(self.rules(r)) for r in rows]

    def _ordered(self, reasons: list[str]) -> list[str]:
        rank = {rule: i for i, rule in enumerate(self.RULES)}
        keyed = []
        for reason in dict.fromkeys(reasons):
            rule = counters.rule_of(reason, self.RULES)
            if rule not in rank:
                raise ValueError(f"{self.name}: reason {reason!r} is not declared in {type(self).__name__}.RULES "
                                 f"({', '.join(self.RULES) or 'empty'}); declare it there")
            keyed.append((rank[rule], reason))
        return [reason for _, reason in sorted(keyed, key=lambda kv: kv[0])]

    def process(self, active: pa.Table) -> pa.Table:
        columns = list(self.COLUMNS) if self.COLUMNS is not None else [
            c for c in active.column_names if c != schema.TRANSIENT.name]
        fired = self.fired(active.select(columns).to_pylist())
        flag_only = set(self.FLAG_ONLY)
        first = [next((r for r in fs if counters.rule_of(r, self.RULES) not in flag_only), None) for fs in fired]
        return schema.reject(schema.add_flags(active, fired), first)
