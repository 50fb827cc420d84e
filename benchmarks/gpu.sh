#!/usr/bin/env bash
# GPU benchmark: the throughput benchmark on CUDA (float16) with whatever Whisper model is local,
# plus training throughput (benchmarks/train_throughput.py, train-base). Run on a machine with a GPU, from the repo root:
#   GRANARY_MODEL_WHISPER_LARGE_V3=/models/faster-whisper-large-v3 bash benchmarks/gpu.sh
# Without that variable the bundled Whisper base is used on the GPU. One ASR worker per GPU
# (GPUS=N for N GPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
tmp=$(mktemp -d)
"$PY" - "$tmp/gpu-pipeline.yaml" <<'PYEOF'
import os, sys, yaml
cfg = yaml.safe_load(open("benchmarks/bench-pipeline.yaml"))
big = "whisper-large-v3" if os.environ.get("GRANARY_MODEL_WHISPER_LARGE_V3") else None
for s in cfg["stages"]:
    if s["use"] == "asr.two_pass":
        p = s["params"]
        p.update(device="cuda", compute_type="float16", model_batch=32)
        if big:
            p.update(lid_model=big, models_by_lang={"default": big})
        s["resources"] = {"cpus": 1, "gpus": 1}
        s["workers"] = int(os.environ.get("GPUS", "1"))  # one worker per GPU
cfg["units"]["recordings_per_unit"] = 24
yaml.safe_dump(cfg, open(sys.argv[1], "w"), sort_keys=False)
PYEOF
"$PY" benchmarks/pipeline_throughput.py --repeat "${REPEAT:-10}" --pipeline "$tmp/gpu-pipeline.yaml" --device cuda --compute-type float16 --floor-procs 0 ${GRANARY_MODEL_WHISPER_LARGE_V3:+--whisper whisper-large-v3}
if "$PY" -c "import torch, webdataset, sentencepiece" 2>/dev/null; then  # the [train] extra is installed
  # model alone vs loader alone vs full `granary train` on train-base (benchmarks/README.md);
  # gpu_train.sh runs the same on a GPU machine that has torch but not this package's install
  "$PY" benchmarks/train_throughput.py --config pipelines/train-base.yaml --out "$tmp/train"
else
  echo "training benchmark skipped: install the [train] extra" >&2
fi
rm -rf "$tmp"
