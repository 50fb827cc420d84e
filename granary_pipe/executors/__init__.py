"""Executors turn the same stages into one engine's work: ``ray`` (default) or ``beam``."""

EXECUTORS = ("ray", "beam")
"""Names ``granary run --executor`` takes; ``granary_pipe.pipeline`` builds the one named."""
