#!/usr/bin/env bash
# One GPU sitting, prepared ahead: the speed figures first (minutes), then the multi-family training run
# continues on the GPU for the time left. See docs/benchmarks.md ("A GPU sitting").
#
#   bash bench/gpu.sh wheels     here, once: download the wheels the GPU image lacks into .whl/ (git-ignored)
#   bash bench/gpu.sh            there: carry .whl; results land under $OUT
#
# The GPU image has torch, transformers, safetensors, jinja2, scipy and tabulate but neither this project nor
# nnsight: the project runs from src/ on PYTHONPATH, nnsight and its missing dependencies come from .whl/.
# Environment: TRAIN_MINUTES (default 5), START_FROM (default: the newest multi-family checkpoint shipped in
# src/debug/embedded/, else runs/multi/multi), BATCH_SIZE (default 512).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(nnsight==0.8.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    greenlet==3.5.6 zstandard==0.25.0 websocket-client==1.9.2)

if [[ "${1:-}" == wheels ]]; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
    ls .whl
    exit
fi

OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/hardware.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$OUT/hardware.txt"

# Figures: each bench times our path and the alternative side by side and prints the ratio.
timeout 120 python3 bench/behaviour.py --cases embedded random 2>&1 | tee "$OUT/behaviour.txt"
timeout 240 python3 bench/patching.py --per-cell-sample 150 --repeats 2 2>&1 | tee "$OUT/patching.txt"

# Training: a new run warm-started from the CPU run's latest model (--resume refuses a change of device or
# batch size, which change the weights); the model comes back as one archive (files from $OUT are limited).
# The newest shipped checkpoint by step (multi-<step>): it travels with the working tree, nothing to carry.
NEWEST=$(ls -d src/debug/embedded/multi-* 2>/dev/null | sort -t- -k2 -n | tail -1)
START_FROM=${START_FROM:-${NEWEST:-runs/multi/multi}}
if [[ -d "$START_FROM" ]]; then
    python3 -m debug.cli train --preset multi --start-from "$START_FROM" --device cuda \
        --batch-size "${BATCH_SIZE:-512}" --micro-batches 1 --out-dir /tmp/multi-gpu --save-every 500 \
        --eval-every 500 --max-minutes "${TRAIN_MINUTES:-5}" 2>&1 | tee "$OUT/train.log"
    tar czf "$OUT/multi-gpu.tgz" -C /tmp multi-gpu
else
    echo "no $START_FROM to start from: set START_FROM or carry it (run: carry [\"runs/multi/multi\"])" \
        | tee "$OUT/train.log"
fi
