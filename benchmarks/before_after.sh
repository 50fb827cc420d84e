#!/bin/bash
# Wall time of `granary run` for two checkouts, alternating, on the demo corpus copied twice (412 s,
# the corpus of pipeline_throughput.py --repeat 2): the demo pipeline and bench-pipeline.yaml of each.
#
#   OLD_ROOT=/tmp/wt-old OLD_PY=/tmp/oldvenv/bin/python bash benchmarks/before_after.sh [RUNS]
#
# OLD_ROOT: a worktree of the earlier commit (git worktree add --detach /tmp/wt-old REV) and
# OLD_PY the python of a venv that can run it. Prints one line per run: command wall s, run.json wall_s.
set -u
RUNS=${1:-2}
NEW_ROOT=$(cd "$(dirname "$0")/.." && pwd)
NEW_PY=${NEW_PY:-$NEW_ROOT/.venv/bin/python}
WORK=${WORK:-/tmp/before_after}
rm -rf "$WORK" && mkdir -p "$WORK"
(cd "$NEW_ROOT" && $NEW_PY -c "
import sys; sys.path.insert(0, 'benchmarks'); import pipeline_throughput as pt; from pathlib import Path
pt.make_corpus(2, Path('$WORK/corpus'))")
pipeline() {  # ROOT NAME -> path of that checkout's pipeline (bundled or top-level)
  for p in "$1/pipelines/$2.yaml" "$1/granary_pipe/_data/pipelines/$2.yaml" "$1/benchmarks/$2.yaml"; do
    [ -f "$p" ] && { echo "$p"; return; }
  done
}
run() {  # LABEL PYTHON ROOT PIPELINE
  local out=$WORK/out-$1 t0 t1 rc
  t0=$(date +%s.%N)
  (cd "$3" && PYTHONPATH=$3 $2 -m granary_pipe.cli run "$4" --source "$WORK/corpus/source.yaml" --out "$out" -q \
     > "$WORK/$1.log" 2>&1)
  rc=$?; t1=$(date +%s.%N)
  python3 -c "import json; d = json.load(open('$out/run.json'))
print('$1', 'rc=$rc', 'command_s=%.1f' % ($t1 - $t0), 'run_wall_s=%.1f' % d['wall_s'], d['status'])"
}
for i in $(seq "$RUNS"); do
  for which in demo bench-pipeline; do
    run "old-$which-$i" "$OLD_PY" "$OLD_ROOT" "$(pipeline "$OLD_ROOT" $which)"
    run "new-$which-$i" "$NEW_PY" "$NEW_ROOT" "$(pipeline "$NEW_ROOT" $which)"
  done
done
