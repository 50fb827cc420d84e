"""Punctuation and capitalisation: ``pnc.llm`` (guarded LLM restoration) and ``pnc.none``."""
