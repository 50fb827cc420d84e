#!/usr/bin/env bash
# Training throughput on a GPU machine, in one call (sized for under 8 minutes on one H200: per
# worker count, 5 warm-up + 20 measured steps of each part on a synthetic release made in seconds):
# benchmarks/train_throughput.py with pipelines/train-base.yaml (model alone, loader alone, full
# `granary train`), once per loader-worker count in WORKERS, on that machine's own torch.
#
#   bash benchmarks/gpu_train.sh --fetch-wheels   # here, with a package registry: fill benchmarks/wheels/
#   bash benchmarks/gpu_train.sh                  # there, from the repo root (benchmarks/wheels/ carried along)
#
# The GPU machine is expected to have Python 3.12 with torch (CUDA), numpy, pyarrow, sentencepiece
# and transformers (which brings pyyaml and tqdm), and no package registry. The trainer needs
# neither faster-whisper, CTranslate2, PyAV nor Ray (features are computed by torch on the GPU,
# FLAC is read by soundfile). What it needs beside those comes as wheels in benchmarks/wheels/
# (about 10 MB per CPU architecture), unpacked into a temporary directory on PYTHONPATH only for
# the groups whose first module does not import there already:
#   soundfile:  soundfile (bundles libsndfile), cffi, pycparser      reading the shards' FLAC
#   pydantic:   pydantic, pydantic-core, annotated-types, typing-inspection, typing-extensions
#                                                                    the training config
#   webdataset: webdataset, braceexpand                              reading the shards
#   jiwer:      jiwer, rapidfuzz, click                              held-out WER (evaluation)
# TensorBoard is optional (without it metrics go to metrics.jsonl only).
# Environment: PY (python, default python3), WORKERS (default "6 14"), STEPS (default 20),
# WARMUP (default 5), BENCH_DIR (synthetic release + training runs; default a temporary directory),
# WHEELS (default benchmarks/wheels), RESULTS_DIR (where each results.json is copied; default $OUT
# when set, as on the device machine), CONFIG (default pipelines/train-base.yaml) and
# REQUIRE_GPU=0 to try the script on a CPU machine (CONFIG=pipelines/train-tiny.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
WHEELS=${WHEELS:-benchmarks/wheels}
GROUPS_=(
  "soundfile soundfile==0.14.0 cffi==2.1.1 pycparser==3.12"
  "pydantic pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0"
  "webdataset webdataset==1.0.2 braceexpand==0.1.7"
  "jiwer jiwer==4.0.0 rapidfuzz==3.14.6 click==8.5.1"
)

if [ "${1:-}" = "--fetch-wheels" ]; then
  PYVER=${PYVER:-3.12}
  mkdir -p "$WHEELS"
  for arch in ${ARCHES:-x86_64 aarch64}; do
    for group in "${GROUPS_[@]}"; do
      # shellcheck disable=SC2086  # PIP and the requirements split on purpose
      ${PIP:-pip} download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
        --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
        -d "$WHEELS" ${group#* }
    done
  done
  du -sh "$WHEELS"; ls "$WHEELS"
  exit 0
fi

if [ "${REQUIRE_GPU:-1}" = 1 ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
site="$tmp/site"
mkdir -p "$site"
arch=$(uname -m)
pytag=$("$PY" -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
for group in "${GROUPS_[@]}"; do
  module=${group%% *}
  if "$PY" -c "import $module" 2>/dev/null; then
    echo "have $module"
    continue
  fi
  for req in ${group#* }; do
    dist=${req%%==*}
    stem=$(echo "$dist" | tr '-' '_')
    whl=$(ls "$WHEELS"/ 2>/dev/null | grep -i "^${stem}-" | grep -E "none-any\.whl$|(${pytag}-|py3-none-).*${arch}" | head -n1 || true)
    [ -n "$whl" ] || { echo "missing wheel for $dist ($pytag, $arch) in $WHEELS: run --fetch-wheels with PYVER" >&2; exit 2; }
    "$PY" -m zipfile -e "$WHEELS/$whl" "$site"
  done
  echo "unpacked $module group"
done
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import granary_pipe.train.loop, sys; assert not {'faster_whisper', 'ctranslate2'} & set(sys.modules)"

bench=${BENCH_DIR:-$tmp/bench}
results=${RESULTS_DIR:-${OUT:-}}
for w in ${WORKERS:-6 14}; do
  echo "== loader workers: $w"
  "$PY" benchmarks/train_throughput.py --config "${CONFIG:-pipelines/train-base.yaml}" --out "$bench" \
    --steps "${STEPS:-20}" --warmup "${WARMUP:-5}" --set "data.loader_workers=$w"
  if [ -n "$results" ]; then mkdir -p "$results" && cp "$bench/results.json" "$results/train-throughput-w$w.json"; fi
done
