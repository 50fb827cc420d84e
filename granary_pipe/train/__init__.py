"""Training on a release: Conformer-CTC, LR warmup schedules, exact resume, WER, multi-GPU.

Modules (each importable on its own; ``torch`` and ``sentencepiece`` come with the
``[train]`` extra, imported only by the modules that need them):

- :mod:`~granary_pipe.train.config`    ``pipelines/train-*.yaml`` validated (pydantic)
- :mod:`~granary_pipe.train.schedules` the four warmup shapes + inverse-sqrt decay
- :mod:`~granary_pipe.train.model`     Conformer encoder (RoPE attention) + CTC head
- :mod:`~granary_pipe.train.tokenizer` SentencePiece trained on the release's train split
- :mod:`~granary_pipe.train.data`      release → WebDataset stream → duration buckets → batches
- :mod:`~granary_pipe.train.loop`      the training loop (re-exports checkpoint and infer helpers)
- :mod:`~granary_pipe.train.checkpoint` checkpoints with optimizer/scheduler/RNG/data position
- :mod:`~granary_pipe.train.infer`     evaluate (WER/CER) and transcribe with a checkpoint
- :mod:`~granary_pipe.train.distributed` Ray Train (``--ray-address``/``--workers``) and torchrun
"""
