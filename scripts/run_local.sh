#!/usr/bin/env bash
# The main job, locally: BETR selection end to end through kfp.local on real data.
#   bash scripts/run_local.sh                 # embedded defaults (see `seedbed run betr-select --help`)
#   bash scripts/run_local.sh --tiny          # the one-minute version on the test subsets
#   bash scripts/run_local.sh --target-set gsm8k --work runs/gsm8k
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/seedbed run betr-select "$@"
