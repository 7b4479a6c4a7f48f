#!/usr/bin/env bash
# The package on one GPU machine, prepared as one command for a short window with no network.
#
#   bash benchmarks/gpu_run.sh --fetch-wheels .whl      # here, with the package index: the
#                                                       # wheels of benchmarks/gpu_wheels.txt
#   bash benchmarks/gpu_run.sh --wheels .whl --out DIR [--work DIR]  # there: the whole run,
#                                                       # about 8 minutes
#   bash benchmarks/gpu_run.sh --tiny --out DIR         # any CPU: the same steps on tiny data
#
# Steps, each timed and logged to DIR/gpu_run.log, with a summary in DIR/gpu_run.json (the
# simulated set and the full run's models go to --work, by default DIR/work):
#   1. install the given wheels (pip --no-index --no-deps) into a folder put on PYTHONPATH;
#   2. check that torch sees CUDA (with --tiny: the CPU is used and this step only reports);
#   3. the tests marked `cuda` (pytest -m cuda; they skip without a GPU);
#   4. simulate a set of the real set's size (10,000 / 2,500 per class) with every core;
#   5. python -m benchmarks.gpu: train_one_epoch and predict_split speed, then a 30-epoch fit
#      on that set and its test evaluation with D4 averaging.
# A failed step is recorded and the next ones still run, so one run tells as much as it can.
# PYTHON picks the interpreter (default python3).
set -uo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
PYTHON="${PYTHON:-python3}"
out="" work="" wheels="" tiny=0 fetch=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --wheels) wheels="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;  # the simulated set and the full run's models
        --tiny) tiny=1; shift ;;
        --fetch-wheels) fetch="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "error: unknown option $1; expected --out DIR [--wheels DIR] [--tiny]" \
               "or --fetch-wheels DIR" >&2; exit 2 ;;
    esac
done

if [ -n "$fetch" ]; then
    mkdir -p "$fetch"
    platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
               --platform manylinux2014_x86_64)
    grep -v '^#' benchmarks/gpu_wheels.txt | while read -r spec; do
        [ -z "$spec" ] && continue
        if [ "${spec%%==*}" = lenstronomy ]; then  # an sdist only: build its pure-Python wheel
            "$PYTHON" -m pip wheel -q --no-deps -w "$fetch" "$spec" || exit 1
        else
            "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
                --implementation cp "${platforms[@]}" -d "$fetch" "$spec" || exit 1
        fi
    done || { echo "error: fetching the wheels failed" >&2; exit 1; }
    echo "wheels in $fetch: $(ls "$fetch" | wc -l) files, $(du -sh "$fetch" | cut -f1)"
    exit 0
fi

if [ -z "$out" ]; then
    echo "error: --out DIR is required (the log and the JSON go there)" >&2
    exit 2
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log="$out/gpu_run.log"
: >"$log"
steps="$out/steps.tsv"
: >"$steps"
export PYTHONUNBUFFERED=1 LENSING_NO_BARS=1
if [ "$tiny" = 1 ]; then
    device=cpu sizes=(--train 6 --val 3 --test 3) gpu_args=(--tiny --device cpu)
else
    device=cuda sizes=(--train 10000 --val 2500 --test 0) gpu_args=()
fi

step() {  # step NAME COMMAND...: run, log, record name, exit code and seconds
    local name="$1" started rc
    shift
    echo "=== $name: $*" | tee -a "$log"
    started=$(date +%s%N)
    "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( ($(date +%s%N) - started) / 1000000 ))" >>"$steps"
    echo "=== $name: exit $rc" | tee -a "$log"
    return "$rc"
}

if [ -n "$wheels" ]; then
    site="${TMPDIR:-/tmp}/lensing-site"
    step wheels "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"

step cuda "$PYTHON" - "$device" <<'PY'
import sys, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory >> 30, "GiB")
    x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    print("bf16 matmul ok:", bool(torch.isfinite((x @ x).float().sum())))
sys.exit(0 if sys.argv[1] == "cpu" or torch.cuda.is_available() else 1)
PY
cuda_ok=$?
if [ "$cuda_ok" != 0 ]; then
    echo "no CUDA device: the GPU steps are skipped" | tee -a "$log"
else
    step tests "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py \
        --junitxml "$out/cuda_tests.xml"
    work="${work:-$out/work}"
    data="$work/data"
    step simulate "$PYTHON" -m lensing simulate --out "$data" "${sizes[@]}" \
        --workers "$(nproc)" --quiet
    step benchmark "$PYTHON" -m benchmarks.gpu "${gpu_args[@]}" --data "$data" \
        --work "$work" --out "$out/gpu_benchmark.json"
fi

"$PYTHON" - "$out" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
out = Path(sys.argv[1])
steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
summary = {"steps": [{"name": n, "exit": int(rc), "seconds": int(ms) / 1000} for n, rc, ms in steps]}
junit = out / "cuda_tests.xml"
if junit.is_file():
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    summary["cuda_tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
bench = out / "gpu_benchmark.json"
if bench.is_file():
    summary["benchmark"] = json.loads(bench.read_text())
(out / "gpu_run.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps({k: v for k, v in summary.items() if k != "benchmark"}, indent=1))
PY
failed=$(awk -F'\t' '$2 != 0' "$steps" | wc -l)
echo "done: $failed failed step(s); $out/gpu_run.json, $log" | tee -a "$log"
[ "$failed" = 0 ]
