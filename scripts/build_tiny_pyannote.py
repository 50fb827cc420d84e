"""Build tiny, randomly initialised pyannote.audio models on disk, loadable offline.

For tests and smoke runs of ``segment.pyannote`` where no pretrained weights can be fetched.
Needs the ``[diarize]`` environment (``make diarize-env``); run with its Python::

    .venv-diarize/bin/python scripts/build_tiny_pyannote.py OUT_DIR [--powerset|--multilabel]

writes

- ``OUT_DIR/segmentation/pytorch_model.bin``: a small ``PyanNet`` speaker-segmentation model
  (5 s chunks, 3 local speakers; powerset with at most 2 simultaneous speakers by default),
  loadable with ``pyannote.audio.Model.from_pretrained(path)``;
- ``OUT_DIR/embedding/pytorch_model.bin``: a small ``XVectorSincNet`` speaker-embedding model;
- ``OUT_DIR/plda/{xvec_transform.npz,plda.npz}``: an identity PLDA (the speaker-diarization
  pipeline loads one even when its clustering does not use it);
- ``OUT_DIR/config.yaml``: a ``pyannote.audio.pipelines.SpeakerDiarization`` pipeline over the
  three (agglomerative clustering), loadable with ``pyannote.audio.Pipeline.from_pretrained(OUT_DIR)``,
  laid out like the hub's ``pyannote/speaker-diarization-community-1``.

The weights are random: outputs have the right shapes and types, not meaning.

How a checkpoint is made without training (pyannote.audio 4.0): ``Model.from_pretrained``
reads a Lightning checkpoint with ``pl_load``, takes the class from
``checkpoint["pyannote.audio"]["architecture"]``, checks ``["versions"]``, and calls
``Klass.load_from_checkpoint``, which re-creates the model from ``hyper_parameters``, restores
``specifications`` in ``Model.on_load_checkpoint`` (which also builds the task-dependent
classifier) and loads ``state_dict``. ``Model.on_save_checkpoint`` fills the pyannote part, so
the checkpoint is that dict plus ``state_dict``, ``hyper_parameters`` and the Lightning version.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # no telemetry from tests

SEGMENTATION_DURATION_S = 5.0
NUM_LOCAL_SPEAKERS = 3
EMBEDDING_DIM = 32

PIPELINE_CONFIG = """\
# tiny random SpeakerDiarization pipeline (scripts/build_tiny_pyannote.py); weights are random
dependencies:
  pyannote.audio: {version}
pipeline:
  name: pyannote.audio.pipelines.SpeakerDiarization
  params:
    segmentation: $model/segmentation
    embedding: $model/embedding
    plda: $model/plda
    clustering: AgglomerativeClustering
    segmentation_step: 0.2
    embedding_exclude_overlap: true
    embedding_batch_size: 8
    segmentation_batch_size: 8
params:
  segmentation:
{segmentation_params}
  clustering:
    method: centroid
    min_cluster_size: 1
    threshold: 0.7
"""


def save_checkpoint(model, path: Path) -> Path:
    """Write ``model`` as a checkpoint ``pyannote.audio.Model.from_pretrained(path)`` loads."""
    import lightning
    import torch

    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)  # adds checkpoint["pyannote.audio"]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def tiny_segmentation(powerset: bool = True, seed: int = 0,
                      duration_s: float = SEGMENTATION_DURATION_S,
                      num_speakers: int = NUM_LOCAL_SPEAKERS, model_class=None):
    """A small random ``PyanNet`` (or subclass ``model_class``) with speaker-segmentation specifications."""
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    torch.manual_seed(seed)
    model = (model_class or PyanNet)(
        sincnet={"stride": 10},
        lstm={"hidden_size": 16, "num_layers": 1, "bidirectional": True, "monolithic": True},
        linear={"hidden_size": 16, "num_layers": 1},
        sample_rate=16000,
    )
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION if powerset else Problem.MULTI_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=duration_s,
        min_duration=duration_s,
        warm_up=(0.0, 0.0),
        classes=[f"speaker#{k + 1}" for k in range(num_speakers)],
        powerset_max_classes=2 if powerset else None,
        permutation_invariant=True,
    )
    model.build()  # the task-dependent classifier + activation
    model.eval()
    return model


def tiny_embedding(seed: int = 1):
    """A small random speaker-embedding model (``XVectorSincNet``)."""
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import XVectorSincNet

    torch.manual_seed(seed)
    model = XVectorSincNet(sample_rate=16000, dimension=EMBEDDING_DIM)
    model.specifications = Specifications(
        problem=Problem.REPRESENTATION,
        resolution=Resolution.CHUNK,
        duration=SEGMENTATION_DURATION_S,
        min_duration=0.5,
    )
    model.build()
    model.eval()
    return model


def identity_plda(directory: Path, dim: int = EMBEDDING_DIM) -> Path:
    """``xvec_transform.npz`` + ``plda.npz`` of an identity transform (``PLDA.from_pretrained``)."""
    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    eye = np.eye(dim)
    np.savez(directory / "xvec_transform.npz", mean1=np.zeros(dim), mean2=np.zeros(dim), lda=eye)
    np.savez(directory / "plda.npz", mu=np.zeros(dim), tr=eye, psi=np.ones(dim))
    return directory


def build(out: Path, powerset: bool = True, seed: int = 0) -> Path:
    """Write the tiny segmentation model, embedding model, PLDA and pipeline config under ``out``."""
    import pyannote.audio

    out = Path(out)
    save_checkpoint(tiny_segmentation(powerset=powerset, seed=seed), out / "segmentation" / "pytorch_model.bin")
    save_checkpoint(tiny_embedding(seed=seed + 1), out / "embedding" / "pytorch_model.bin")
    identity_plda(out / "plda")
    seg_params = "    min_duration_off: 0.0" if powerset else "    min_duration_off: 0.0\n    threshold: 0.5"
    (out / "config.yaml").write_text(
        PIPELINE_CONFIG.format(version=pyannote.audio.__version__, segmentation_params=seg_params)
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output directory")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--powerset", dest="powerset", action="store_true", default=True,
                      help="powerset segmentation model (default, like pyannote/segmentation-3.0)")
    kind.add_argument("--multilabel", dest="powerset", action="store_false",
                      help="multi-label (sigmoid per speaker) segmentation model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = build(args.out, powerset=args.powerset, seed=args.seed)
    print(f"pipeline: {out}  (config.yaml)\nsegmentation model: {out / 'segmentation' / 'pytorch_model.bin'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
