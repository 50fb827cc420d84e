"""What ships inside the package (``granary_pipe/_data``), and pipelines and sources by path or bundled name.
Design: docs/architecture.md, "Command line, progress, bundled data"."""

from __future__ import annotations

from pathlib import Path

from granary_pipe.config import ConfigError

DATA = Path(__file__).resolve().parent / "_data"
PIPELINES = DATA / "pipelines"
DEMO_SOURCE = DATA / "demo" / "demo.yaml"
SOURCES = {"demo": DEMO_SOURCE}
TRAIN_PREFIX = "train-"  # bundled training configs: train-*.yaml


def pipeline_names(kind: str = "curate") -> list[str]:
    """Names of the bundled curation pipelines (``kind="curate"``) or training configs (``"train"``)."""
    names = sorted(p.stem for p in PIPELINES.glob("*.yaml"))
    return [n for n in names if n.startswith(TRAIN_PREFIX) == (kind == "train")]


def _resolve(value: str | Path, bundled: dict[str, Path], what: str) -> Path:
    path = Path(value).expanduser()
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        if not path.exists():
            raise ConfigError(f"{path}: no such {what} file")
        return path
    if str(value) in bundled:
        return bundled[str(value)]
    raise ConfigError(f"{value}: neither a {what} file nor a bundled {what} "
                      f"(bundled: {', '.join(sorted(bundled)) or 'none'})")


def pipeline_path(value: str | Path, kind: str = "curate") -> Path:
    """A pipeline (or training config) file from a path or a bundled name (``demo``, ``train-tiny``)."""
    return _resolve(value, {n: PIPELINES / f"{n}.yaml" for n in pipeline_names(kind)},
                    "pipeline" if kind == "curate" else "training config")


def source_path(value: str | Path) -> Path:
    """A source manifest from a path or a bundled name (``demo``: the demo corpus)."""
    return _resolve(value, SOURCES, "source manifest")


def default_source(pipeline: Path) -> Path | None:
    """The source a bundled pipeline runs on without ``--source``: the demo corpus for the demo pipeline, else None."""
    return DEMO_SOURCE if Path(pipeline).resolve() == (PIPELINES / "demo.yaml").resolve() else None
