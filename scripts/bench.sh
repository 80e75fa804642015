#!/usr/bin/env bash
# Performance benchmarks: each prints its ratio against a baseline measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
for b in benchmarks/bench_*.py; do
  echo "== $b"
  .venv/bin/python "$b" "$@"
done
