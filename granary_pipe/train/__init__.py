"""Training on a release: Conformer-CTC, LR warmup schedules, exact resume, WER, multi-GPU.

Modules (each importable on its own; ``torch`` and ``sentencepiece`` come with the
``[train]`` extra, imported only by the modules that need them):

- :mod:`~granary_pipe.train.config`    ``pipelines/train-*.yaml`` validated (pydantic)
- :mod:`~granary_pipe.train.schedules` the four warmup shapes + inverse-sqrt decay
- :mod:`~granary_pipe.train.model`     Conformer encoder (RoPE attention) + CTC head
- :mod:`~granary_pipe.train.tokenizer` SentencePiece trained on the release's train split
- :mod:`~granary_pipe.train.data`      release → WebDataset stream → duration buckets → padded waveforms
- :mod:`~granary_pipe.train.audio`     FLAC/audio files → 16 kHz mono (soundfile; no PyAV needed)
- :mod:`~granary_pipe.train.features`  Whisper's log-mel and SpecAugment in batch on the device

No module here imports faster-whisper, CTranslate2, PyAV or Ray at import time: the trainer runs on
a GPU machine with torch and the ``[train]`` extra's small packages (``benchmarks/gpu_train.sh``).
- :mod:`~granary_pipe.train.loop`      the training loop (re-exports checkpoint and infer helpers)
- :mod:`~granary_pipe.train.checkpoint` checkpoints with optimizer/scheduler/RNG/data position
- :mod:`~granary_pipe.train.infer`     evaluate (WER/CER) and transcribe with a checkpoint
- :mod:`~granary_pipe.train.distributed` rank, world size, device and the replica check (one process, torchrun)
- :mod:`~granary_pipe.train.launch`    where the loop runs: one process, torchrun, Ray Train (``--workers``)
"""
