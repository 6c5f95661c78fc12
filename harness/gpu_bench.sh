#!/usr/bin/env bash
# The GPU benchmark of issue #8 in one run: `arches bench` at size small, bf16 autocast,
# torch.compile of our models (transformers eager), fused AdamW, the issue's shapes
# (32x1024 decoder tokens, 64x512 BERT, 64x568-token T5 windows = 512 inputs + 114
# targets, 32x1024 GLM), vocab 32768, each family's scorer on 1,600 requests, and
# lm-eval's simple_evaluate with `arches` against its own `hf` backend on the same
# exported weights. Writes $OUT/bench.json (rewritten after every preset, so a run cut
# short keeps what it measured; meta.complete says whether it finished), the printed
# table in $OUT/bench.txt and the machine in $OUT/gpu.txt.
#
# The GPU machine has no network; it has torch (CUDA), lightning, transformers,
# pandas, tokenizers, rich and pyyaml, but not hydra-core, omegaconf, optuna or
# lm-eval (nor datasets). Collect their wheels here first, once (about 18 MiB):
#
#     ../shared/tools/offline-wheels hydra-core optuna lm-eval     # -> .whl/
#     echo /.whl/ >> .git/info/exclude
#
# and send .whl with the run (the device tool: carry [".whl"]). This script installs
# them into .site (pip --no-index --no-deps --target .site, as offline-wheels' header
# says) and runs the package from the checkout (PYTHONPATH=$PWD:$PWD/.site).
#
# Usage, on the device:  bash harness/gpu_bench.sh [overrides...]
#   e.g. bash harness/gpu_bench.sh arch=gpt,glm bench.steps=20
#        bash harness/gpu_bench.sh bench.compile=false            # the eager figures
# Expect about 5-8 minutes on one H200 (most of it torch.compile, once per preset);
# BENCH_TIMEOUT (seconds, default 540) stops it before the device's 10-minute limit.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-results/bench-gpu}
mkdir -p "$OUT"

if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target .site .whl/*.whl \
        || { echo "gpu_bench: installing .whl/ failed" >&2; exit 1; }
fi
export PYTHONPATH=$PWD:$PWD/.site${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false COLUMNS=170

if ! python3 -c "import hydra, omegaconf, lm_eval, datasets" 2>/dev/null; then
    echo "gpu_bench: hydra-core, omegaconf, lm-eval or datasets is missing; collect .whl/ as this script's header says" >&2
    exit 1
fi

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
} > "$OUT/gpu.txt"
cat "$OUT/gpu.txt"

timeout "${BENCH_TIMEOUT:-540}" python3 -m arches.cli bench size=small "bench.output=$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.txt"
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "gpu_bench: stopped after ${BENCH_TIMEOUT:-540}s; $OUT/bench.json holds the presets measured so far" >&2
exit "$status"
