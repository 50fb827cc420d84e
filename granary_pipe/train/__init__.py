"""Training on a release: Conformer-CTC with a SentencePiece CTC head, warmup schedules, exact resume,
WER, one process, torchrun DDP or Ray Train (extra ``[train]``). Modules: config, data, audio,
features, tokenizer, model, schedules, loop, checkpoint, metrics, infer, distributed, launch; none
imports faster-whisper, CTranslate2, PyAV or Ray at import time. Design: docs/architecture.md (Train).
"""
