#!/usr/bin/env bash
# The main job, locally: curate-and-grow end to end through kfp.local on real data at tiny scale.
#   bash scripts/run_local.sh                              # configs/local.yaml
#   bash scripts/run_local.sh --config my.yaml --work runs/other
#   bash scripts/run_local.sh --check                      # validate the config only
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/seedbed run curate-and-grow "$@"
