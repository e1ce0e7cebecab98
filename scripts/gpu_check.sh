#!/usr/bin/env bash
# `make gpu-check`, in two parts (docs/gpu.md):
#   here  (no GPU):  build gpu_bundle/ (git-ignored): the wheels the GPU machine lacks, the model's config and
#                    tokenizer (no weights), and scripts/gpu_bundle.lock; prints the size against the 50 MiB limit
#   there (a GPU):   install the bundle into a temporary folder and run harness.bench.gpu_check (< 8 minutes);
#                    the summary table lands in results/gpu/check.md
# `scripts/gpu_check.sh bundle|run|dry-run` picks a part; dry-run is the check on the CPU (the tests run it).
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE:-gpu_bundle}
MODEL=${MODEL:-$BUNDLE/model}
OUT=${OUT:-results/gpu}
PY=${PY:-python3}
mode=${1:-auto}
[ $# -gt 0 ] && shift
if [ "$mode" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then mode=run; else mode=bundle; fi
fi
case "$mode" in
  bundle)
    exec "$PY" -m harness.bench.gpu_bundle "$BUNDLE"
    ;;
  run|dry-run)
    site=$(mktemp -d)
    trap 'rm -rf "$site"' EXIT
    if [ "${SKIP_INSTALL:-0}" != 1 ]; then
      # --no-deps: the bundle holds exactly what the machine lacks; --no-index: there is no network
      "$PY" -m pip install --quiet --no-index --no-deps --target "$site" "$BUNDLE"/wheels/*.whl
    fi
    expect=cuda
    [ "$mode" = dry-run ] && expect=cpu
    mkdir -p "$OUT"
    PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
      timeout "${LIMIT_S:-480}" "$PY" -m harness.bench.gpu_check --model "$MODEL" --expect "$expect" \
      --out "$OUT/check.md" "$@"
    ;;
  *)
    echo "usage: scripts/gpu_check.sh [bundle|run|dry-run] [gpu_check options]" >&2
    exit 2
    ;;
esac
