#!/usr/bin/env bash
# Does this tree give the same user-visible outputs as revision BASE? For refactors ("same behaviour").
#
#   scripts/compare_outputs.sh BASE [WORKDIR]        e.g. scripts/compare_outputs.sh e8de4b0
#
# BASE (git archive into WORKDIR) makes one demo run; then BASE and this tree each produce, from that run:
# `granary stages` and `stages --json`, every command's --help (COLUMNS=120), `report` of the run and of a
# release (text, --json, --html; the HTML's "generated" time masked), `licenses audit`, `sources`, and two
# releases (`--formats all --shard-rows 3`, default formats `--shard-rows 8`). Prints every file that differs
# (diff -r) and exits 1, or says "same outputs as BASE". PYTHON: the interpreter (default .venv/bin/python).
set -euo pipefail
base=${1:?usage: scripts/compare_outputs.sh BASE [WORKDIR]}
root=$(git rev-parse --show-toplevel)
work=$(realpath -m "${2:-$(mktemp -d /tmp/compare-outputs-XXXX)}")
py=$(realpath -s "${PYTHON:-$root/.venv/bin/python}")
export COLUMNS=120 GRANARY_PROGRESS=off
mkdir -p "$work/base-src"
git -C "$root" archive "$base" | tar -x -C "$work/base-src"

granary() {  # granary TREE ARGS...: the CLI of that tree, run from it (checked: its package is the one imported)
  local tree=$1; shift
  cd "$tree"
  PYTHONPATH=$tree "$py" -c 'import sys, granary_pipe, pathlib
if not pathlib.Path(granary_pipe.__file__).resolve().is_relative_to(pathlib.Path(sys.argv[1]).resolve()):
    sys.exit(f"{granary_pipe.__file__} is not under {sys.argv[1]}")' "$tree"
  PYTHONPATH=$tree "$py" -m granary_pipe.cli "$@"
}

outputs() {  # outputs TREE DIR
  local tree=$1 dir=$2 run=$work/run
  mkdir -p "$dir"
  granary "$tree" stages > "$dir/stages.txt" 2>&1 || true
  granary "$tree" stages --json > "$dir/stages.json" 2>&1 || true
  for c in "" run submit status logs stages release report download verify sources licenses "licenses audit" \
           train evaluate transcribe plot-schedules; do
    # shellcheck disable=SC2086  # the command's words
    granary "$tree" $c --help > "$dir/help-$(echo "top $c" | tr ' ' '-').txt" 2>&1 || true
  done
  granary "$tree" release "$run" --out "$dir/rel-all" --formats all --shard-rows 3 > /dev/null 2>&1 || echo failed > "$dir/rel-all.failed"
  granary "$tree" release "$run" --out "$dir/rel-demo" --shard-rows 8 > /dev/null 2>&1 || echo failed > "$dir/rel-demo.failed"
  for target in run:"$run" rel:"$dir/rel-all"; do
    local name=${target%%:*} path=${target#*:}
    granary "$tree" report "$path" > "$dir/report-$name.txt" 2>&1 || true
    granary "$tree" report "$path" --json > "$dir/report-$name.json" 2>&1 || true
    granary "$tree" report "$path" --html "$dir/report-$name.html" > /dev/null 2>&1 || true
    sed -i -E 's/generated [0-9-]+ [0-9:]+ UTC/generated TIME/' "$dir/report-$name.html" 2>/dev/null || true
  done
  sed -i "s|$dir|OUT|g" "$dir"/report-rel.* 2>/dev/null || true
  granary "$tree" licenses audit "$run" > "$dir/audit-run.txt" 2>&1 || true
  granary "$tree" sources > "$dir/sources.txt" 2>&1 || true
}

granary "$work/base-src" run demo --out "$work/run" -q
outputs "$work/base-src" "$work/base"
outputs "$root" "$work/head"
if diff -r -q "$work/base" "$work/head"; then
  echo "same outputs as $base ($work)"
else
  echo "outputs differ from $base: diff -r $work/base $work/head"
  exit 1
fi
