"""Translation: ``translate.llm`` and ``translate.whisper``, both gated by ``translate.filters``."""
