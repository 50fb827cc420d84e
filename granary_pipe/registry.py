"""Stage registry: the names of ``use:`` in ``pipelines/*.yaml`` → Stage classes, filled by
``@register`` when ``granary_pipe.stages`` is imported."""

from __future__ import annotations

from typing import Callable, TypeVar

from granary_pipe.stage import Stage

S = TypeVar("S", bound=type[Stage])

STAGES: dict[str, type[Stage]] = {}


def register(name: str) -> Callable[[S], S]:
    """Class decorator: make ``cls`` available as ``use: name`` in pipeline configs."""

    def wrap(cls: S) -> S:
        if name in STAGES and STAGES[name] is not cls:
            raise ValueError(f"stage name {name!r} registered twice")
        cls.name = name
        STAGES[name] = cls
        return cls

    return wrap


def all_stages() -> dict[str, type[Stage]]:
    """Every stage class by registered name, sorted by name."""
    import granary_pipe.stages  # noqa: F401  (fills the registry)

    return dict(sorted(STAGES.items()))


def get(name: str) -> type[Stage]:
    """The Stage class registered as ``name``; KeyError lists the known names."""
    try:
        return all_stages()[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(sorted(STAGES))}") from None
