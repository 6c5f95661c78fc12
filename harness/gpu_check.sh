#!/usr/bin/env bash
# Issue 21's GPU check in one device call (a 10-minute limit per command, 15 minutes of GPU time
# in all): the GPU tests (`pytest -m gpu tests/test_gpu.py`: flex against dense masks, compiled
# against eager, chunked against plain loss in bf16, a 20-step `arches train` of each family with
# the GPU defaults, GPU against CPU scoring, no recompiles), `arches compare experiment=families
# quick=true` on a tiny local corpus, and `arches bench size=small`; then the table of
# harness/gpu_summary.py: each stage's status and seconds, each preset's tok/s, MFU and ratio,
# and the issue's targets met or missed. Expect about 8 minutes on one H200.
#
# Into $OUT (default results/gpu-check; 8 files, what the device tool brings back): gpu.txt (the
# machine), gpu_tests.txt and gpu_tests.xml (pytest's log and junit XML), compare.txt, bench.txt,
# bench.json (rewritten after every preset, so a bench cut short keeps what it measured),
# summary.json and summary.txt (the table).
#
# The GPU machine has no network and lacks hydra-core, omegaconf, optuna and lm-eval (nor
# datasets; pytest and pytest-xdist are there): collect their wheels here first, once, as
# harness/gpu_bench.sh's header says (../shared/tools/offline-wheels hydra-core optuna
# lm-eval -> .whl/), and carry them:
#     device run: command "bash harness/gpu_check.sh", carry [".whl"], timeout_s 600
#
# Usage:  bash harness/gpu_check.sh [--dry-run] [bench overrides...]
#   --dry-run (or GPU_CHECK_DRY_RUN=1): the same stages on a CPU at the smallest sizes (the GPU
#   tests collected only, `arches bench --quick`), to test this script's plumbing anywhere.
# Time: every stage has a cap (GPU_TESTS_TIMEOUT 180 s, COMPARE_TIMEOUT 150 s, BENCH_TIMEOUT
# 300 s) and all of them share GPU_CHECK_BUDGET (540 s from the start), so the last stage gets
# what is left and the call ends inside the device's 10 minutes. The bench runs the four
# families' presets (llama too: `bash harness/gpu_check.sh arch=gpt,llama,bert,t5,glm`);
# compare trains eagerly (COMPARE_ARGS, default trainer.compile=false: four compilations
# would take most of its time, and the tests' 20-step trains compile every family).
set -uo pipefail

cd "$(dirname "$0")/.."
usage="usage: bash harness/gpu_check.sh [--dry-run] [bench overrides...]"
DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
bench_args=()
for arg in "$@"; do
    case $arg in
        --dry-run) DRY_RUN=1 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        -*) echo "gpu_check: unknown option $arg; $usage" >&2; exit 2 ;;
        *) bench_args+=("$arg") ;;
    esac
done
case $DRY_RUN in 0|1) ;; *) echo "gpu_check: GPU_CHECK_DRY_RUN=$DRY_RUN must be 0 or 1" >&2; exit 2 ;; esac
for name in GPU_CHECK_BUDGET GPU_TESTS_TIMEOUT COMPARE_TIMEOUT BENCH_TIMEOUT GPU_TESTS_WORKERS; do
    value=${!name:-1}
    if ! [[ $value =~ ^[1-9][0-9]*$ ]]; then
        echo "gpu_check: $name=$value must be a positive number (of seconds, or of workers)" >&2
        exit 2
    fi
done
OUT=${OUT:-results/gpu-check}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" || { echo "gpu_check: cannot create OUT=$OUT" >&2; exit 1; }
OUT=$(cd "$OUT" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }  # not $EPOCHREALTIME, whose decimal point follows the locale
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
started=$(now)
budget=${GPU_CHECK_BUDGET:-540}
stages=()

# run_stage NAME CAP LOG COMMAND...: COMMAND under timeout (its cap, or what is left of the
# budget), its output to the terminal and LOG; records NAME=STATUS:SECONDS for the summary
run_stage() {
    local name=$1 cap=$2 log=$3 left limit begin status
    shift 3
    left=$(awk -v s="$started" -v n="$(now)" -v b="$budget" 'BEGIN { printf "%d", b - (n - s) }')
    limit=$(( cap < left ? cap : left ))
    if [ "$limit" -lt 15 ]; then
        echo "gpu_check: $name skipped, ${left}s left of GPU_CHECK_BUDGET=${budget}" | tee "$log" >&2
        stages+=("$name=skipped:0")
        return
    fi
    echo "== $name (up to ${limit}s): $*"
    begin=$(now)
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    [ "$status" -eq 124 ] && echo "gpu_check: $name stopped after ${limit}s" | tee -a "$log" >&2
    stages+=("$name=$status:$(elapsed "$begin")")
}

begin=$(now)
wheels=${GPU_CHECK_WHEELS:-.whl}  # the wheels carried along (tests/test_gpu_summary.py points it elsewhere)
if [ -d "$wheels" ]; then
    "$PYTHON" -m pip install -q --upgrade --no-index --no-deps --no-compile --no-cache-dir --target .site \
        "$wheels"/*.whl || { echo "gpu_check: installing $wheels/ failed" >&2; exit 1; }
fi
export PYTHONPATH=$PWD:$PWD/.site${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false COLUMNS=170 PYTHONUNBUFFERED=1
if ! "$PYTHON" -c "import hydra, omegaconf, lm_eval, datasets, pytest" 2>/dev/null; then
    echo "gpu_check: hydra-core, omegaconf, lm-eval, datasets or pytest is missing;" \
        "collect .whl/ as this script's header says" >&2
    exit 1
fi
if [ "$DRY_RUN" = 0 ] && ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: torch sees no CUDA GPU here; on a CPU run bash harness/gpu_check.sh --dry-run" >&2
    exit 1
fi
stages+=("install=0:$(elapsed "$begin")")

{
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    else
        echo "nvidia-smi: not found"
    fi
    "$PYTHON" -c "import torch, transformers as t; print('torch', torch.__version__, 'cuda', torch.version.cuda,
          'transformers', t.__version__)"
    echo "cpus $(nproc), dry run $DRY_RUN"
} > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

# the GPU tests: spread over workers (each xdist worker is a process with its own CUDA context;
# worksteal lets an idle worker take a queued 20-step train from a busy one); -v, not -q: a line
# per finished test, which a log cut short by the timeout keeps, and each test's seconds at the end
rm -f "$OUT/gpu_tests.xml"
if [ "$DRY_RUN" = 1 ]; then
    run_stage tests "${GPU_TESTS_TIMEOUT:-180}" "$OUT/gpu_tests.txt" \
        "$PYTHON" -m pytest -q -p no:cacheprovider --collect-only -m gpu tests/test_gpu.py
else
    workers=()  # worksteal came with pytest-xdist 3.2; before it, plain load balancing
    if "$PYTHON" -c "import sys, xdist; sys.exit(tuple(map(int, xdist.__version__.split('.')[:2])) < (3, 2))" 2>/dev/null; then
        workers=(-n "${GPU_TESTS_WORKERS:-8}" --dist worksteal)
    elif "$PYTHON" -c "import xdist" 2>/dev/null; then
        workers=(-n "${GPU_TESTS_WORKERS:-8}")
    fi
    run_stage tests "${GPU_TESTS_TIMEOUT:-180}" "$OUT/gpu_tests.txt" \
        "$PYTHON" -m pytest -v --durations=0 -p no:cacheprovider -m gpu "${workers[@]}" \
        --junitxml="$OUT/gpu_tests.xml" tests/test_gpu.py
fi

# compare: the GPU machine is offline, so the embedded corpus (two PyPI archives) is out of
# reach; the tests' tiny corpus stands in, with 128-token windows as tests/test_compare.py uses
"$PYTHON" -c "import sys, pathlib; sys.path.insert(0, 'tests'); import conftest
conftest.write_tiny_corpus(pathlib.Path(sys.argv[1]))" "$work/corpus" \
    || { echo "gpu_check: writing the tiny corpus failed" >&2; exit 1; }
read -r -a compare_args <<< "${COMPARE_ARGS-trainer.compile=false}"
run_stage compare "${COMPARE_TIMEOUT:-150}" "$OUT/compare.txt" \
    "$PYTHON" -m arches.cli compare experiment=families quick=true data=local "data.paths=[$work/corpus]" \
    data.vocab_size=512 data.seq_len=128 "cache_dir=$work/cache" "results_dir=$work/results" "${compare_args[@]}"

# the four families' presets (a later arch= on the command line wins); --quick: debug size on a CPU
scale=(size=small)
[ "$DRY_RUN" = 1 ] && scale=(--quick)
run_stage bench "${BENCH_TIMEOUT:-300}" "$OUT/bench.txt" \
    "$PYTHON" -m arches.cli bench "${scale[@]}" "bench.output=$OUT/bench.json" arch=gpt,bert,t5,glm "${bench_args[@]}"

dry=()
[ "$DRY_RUN" = 1 ] && dry=(--dry-run)
echo "== summary"
"$PYTHON" -m harness.gpu_summary "$OUT" "${dry[@]}" "${stages[@]}" | tee "$OUT/summary.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
for stage in "${stages[@]}"; do
    [[ $stage == *=0:* ]] || exit 1  # a stage failed, timed out or was skipped
done
exit 0
