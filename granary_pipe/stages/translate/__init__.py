"""Translation: ``translate.llm`` (LLM, X→En and En→X) and ``translate.whisper`` (Whisper X→En),
both gated by the filters of ``translate.filters``."""
