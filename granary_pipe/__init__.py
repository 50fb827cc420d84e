"""granary_pipe: open speech data to release-ready corpora."""

__version__ = "0.1.0"
