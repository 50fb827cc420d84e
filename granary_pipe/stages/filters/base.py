"""The filter base: a filter writes only its rules; flagging, rejecting and counting are built in.
Design: docs/architecture.md, "Data flow" (Filters)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

import pyarrow as pa

from granary_pipe import counters, schema
from granary_pipe.stage import Stage


@lru_cache(maxsize=64)
def _rank(rules: tuple[str, ...]) -> dict[str, int]:
    """Position of each rule in a filter's ``RULES`` (built once per distinct ``RULES``)."""
    return {rule: i for i, rule in enumerate(rules)}


class FilterStage(Stage):
    """Base of stages that reject rows by named rules (not registered itself). ``RULES``: every
    reason (or reason prefix) the filter gives, in the order that decides ``drop_reason``."""

    FLAG_ONLY: ClassVar[tuple[str, ...]] = ()  # rules recorded in flags that never reject
    COLUMNS: ClassVar[tuple[str, ...] | None] = None  # the columns rules() reads (None: all but the samples)

    def rules(self, row: dict[str, Any]) -> list[str]:
        """Reasons ``row`` (a dict of ``COLUMNS``) breaks, in any order; empty when it passes."""
        raise NotImplementedError

    def fired(self, rows: list[dict[str, Any]]) -> list[list[str]]:
        """Reasons of each row, deduplicated and in ``RULES`` order. Override to judge rows in bulk."""
        return [self._ordered(self.rules(r)) for r in rows]

    def _ordered(self, reasons: list[str]) -> list[str]:
        rank = _rank(self.RULES)
        rule = {reason: counters.rule_of(reason, self.RULES) for reason in reasons}  # insertion order: deduplicated
        for reason, r in rule.items():
            if r not in rank:
                raise ValueError(f"{self.name}: reason {reason!r} is not declared in {type(self).__name__}.RULES "
                                 f"({', '.join(self.RULES) or 'empty'}); declare it there")
        return sorted(rule, key=lambda reason: rank[rule[reason]])

    def process(self, active: pa.Table) -> pa.Table:
        columns = list(self.COLUMNS) if self.COLUMNS is not None else [
            c for c in active.column_names if c != schema.TRANSIENT.name]
        fired = self.fired(active.select(columns).to_pylist())
        flag_only = set(self.FLAG_ONLY)
        if flag_only:
            first = [next((r for r in fs if counters.rule_of(r, self.RULES) not in flag_only), None) for fs in fired]
        else:
            first = [fs[0] if fs else None for fs in fired]
        return schema.reject(schema.add_flags(active, fired), first)
