"""Executors turn the same stages into one engine's work: ``ray`` (default) or ``beam``."""
