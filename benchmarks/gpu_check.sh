#!/usr/bin/env bash
# One command that checks minimf on an NVIDIA GPU, in under 10 minutes:
#
#     bash benchmarks/gpu_check.sh              # log and summary.json into $OUT, else a new /tmp folder
#     OUT=/some/folder bash benchmarks/gpu_check.sh
#     bash benchmarks/gpu_check.sh --probe      # the probe alone: what it found, exit status 0 with a GPU
#
# First a probe: CuPy imports, sees a CUDA device, compiles one kernel (NVRTC) and runs it and one
# matrix product (cuBLAS), and the numbers are right; a machine that only imports CuPy and counts its
# devices (a driver without NVRTC, say) is not taken for a GPU. Where the probe passes it runs, each
# step under its own `timeout`:
#   (a) the tests on real CuPy: tests/test_gpu.py and tests/test_real_cupy.py, `pytest -m gpu tests/`,
#       and `-k cupy` of the files whose tests take the `backend`/`xp` fixtures;
#   (b) the command line end to end, one epoch each, `--backend cupy`: MF and BP on the MLP
#       (784-1000-1000, full MNIST) and on the paper's CNN (64-128-256-512; --train-subset 5000
#       --test-subset 2000, so that both fit the time budget);
#   (c) benchmarks/launch_model.py, the launches counted per step and the model's predicted step and
#       epoch (docs/gpu.md), then benchmarks/epoch_time.py --backend cupy for the MLP 784-1000-1000,
#       batch 256 (full epoch, 3 repeats), and for the paper's CNN (fraction 0.2 of an epoch,
#       2 repeats), each with --json, and prints their ratios (against PyTorch on the same GPU where
#       torch.cuda works): the prediction and the measurement side by side in one log; then
#       benchmarks/mixer_memory.py --backend cupy, the peak of CuPy's memory pool in one MF and one BP
#       Mixer step against depth (MF v2's 31%).
# Without a GPU it says why (the probe's last line), runs the stand-in tests instead (MINIMF_STRICT_CUPY=1:
# tests/test_strict_cupy.py and tests/test_gpu.py on minimf's CPU stand-in for CuPy, and
# tests/test_real_cupy.py, which holds the stand-in against the real CuPy where it imports) and exits
# with their status (0 when they pass).
#
# Nothing is installed: it uses the python3 that is there (PYTHON=... to choose another) and runs
# minimf from this checkout through PYTHONPATH. What is missing is skipped with a line saying so
# (no pytest: no tests; no tqdm: no command line and no benchmark; no torch: no PyTorch rows).
# Into $OUT: gpu_check.log (everything printed), one log per step, the benchmarks' JSON, and
# summary.json (each step's exit status and seconds, the GPU's name from nvidia-smi, the ratios).
# The exit status is 0 when every step that ran passed.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
BUDGET="${GPU_CHECK_BUDGET:-555}"   # seconds for everything: the probe (at most 65) and the steps' caps (480)
PROBE_ONLY=""
[ "${1:-}" = "--probe" ] && PROBE_ONLY=1
OUT="${OUT:-}"
if [ -n "$PROBE_ONLY" ]; then
    OUT=/dev/null/unused            # nothing is written
elif [ -z "$OUT" ]; then
    OUT="$(mktemp -d /tmp/minimf-gpu-check.XXXXXX)"
fi
if [ -z "$PROBE_ONLY" ]; then
    mkdir -p "$OUT"
    OUT="$(cd "$OUT" && pwd)"
    : > "$OUT/steps.tsv"
fi
STEPS_FILE="$OUT/steps.tsv"
START="$(date +%s)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
PYTEST=("$PYTHON" -m pytest -q -p no:cacheprovider)

say() { printf '%s\n' "$*"; }

has_module() { "$PYTHON" -c "import $1" > /dev/null 2>&1; }

# step NAME CAP_SECONDS COMMAND...: run COMMAND under `timeout` (the smaller of CAP and what is left
# of BUDGET), its output into the log and OUT/NAME.log; record NAME, exit status, seconds, last line.
step() {
    local name="$1" cap="$2"
    shift 2
    local left=$(( BUDGET - ($(date +%s) - START) - 5 ))
    local limit=$(( cap < left ? cap : left ))
    if [ "$limit" -lt 10 ]; then
        say "== $name: skipped, the time budget (${BUDGET} s) is spent"
        record "$name" skipped 0 "the time budget is spent"
        return 0
    fi
    say "== $name (at most ${limit} s): $*"
    local began rc
    began="$(date +%s.%N)"
    timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    rc="${PIPESTATUS[0]}"
    local took
    took="$(awk -v a="$began" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
    local last
    last="$(grep -v '^[[:space:]]*$' "$OUT/$name.log" | tail -n 1 | tr '\t' ' ' | cut -c1-300)"
    [ "$rc" = 124 ] && last="timed out after ${limit} s; $last"
    say "== $name: exit $rc in ${took} s"
    record "$name" "$rc" "$took" "$last"
}

skip() {   # skip NAME REASON
    say "== $1: skipped, $2"
    record "$1" skipped 0 "$2"
}

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$STEPS_FILE"; }

gpu_name() {
    if command -v nvidia-smi > /dev/null 2>&1; then
        nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1
    fi
}

detect_gpu() {   # prints what it found; exit status 0 with a GPU that compiles a kernel and runs a product
    timeout --kill-after=5 60 "$PYTHON" - <<'EOF'
import sys
try:
    import cupy
except Exception as err:
    sys.exit(f"CuPy cannot be imported ({type(err).__name__}: {err})")
try:
    count = cupy.cuda.runtime.getDeviceCount()
except Exception as err:
    sys.exit(f"CuPy cannot reach a CUDA device ({type(err).__name__}: {err})")
if count < 1:
    sys.exit("CuPy finds no CUDA device")
import numpy as np
host = np.arange(12, dtype=np.float32).reshape(3, 4)
try:
    twice = cupy.ElementwiseKernel("float32 x", "float32 y", "y = 2 * x", "minimf_gpu_check_probe")
    a = cupy.asarray(host)
    product = (a @ twice(a).T).get()    # NVRTC compiles the kernel, the GPU runs it, cuBLAS the product
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
except Exception as err:
    sys.exit(f"CuPy sees {count} CUDA device(s) but cannot compile and run a kernel and a product "
             f"({type(err).__name__}: {err}); without NVRTC, install it (pip install 'cuda-toolkit[nvrtc]')")
if not np.allclose(product, host @ (2 * host).T):
    sys.exit(f"CuPy's kernel and product ran on the GPU but gave wrong numbers: {product.tolist()}")
name = name.decode() if isinstance(name, bytes) else name
print(f"CuPy {cupy.__version__}, {count} CUDA device(s), device 0 {name}: compiled a kernel, ran it and a product")
EOF
}

# the files whose tests take the backend/xp fixtures (test_gpu.py runs on its own)
backend_test_files() {
    grep -lE 'def test_[A-Za-z0-9_]*\([^)]*\b(backend|xp)\b' "$ROOT"/tests/test_*.py | grep -v '/test_gpu\.py$'
}

write_summary() {   # write_summary GPU(true/false) REASON
    "$PYTHON" - "$OUT" "$1" "$2" "$(gpu_name)" <<'EOF'
import json, os, sys, tempfile
out, gpu, reason, name = sys.argv[1], sys.argv[2] == "true", sys.argv[3], sys.argv[4] or None
steps = []
with open(os.path.join(out, "steps.tsv")) as f:
    for line in f:
        step, rc, seconds, last = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
        steps.append({"name": step, "exit": None if rc == "skipped" else int(rc), "skipped": rc == "skipped",
                      "seconds": float(seconds), "last_line": last})
benchmarks = {}
for arch in ("mlp", "cnn"):
    path = os.path.join(out, f"epoch_time_{arch}.json")
    if os.path.exists(path):
        with open(path) as f:
            report = json.load(f)
        benchmarks[arch] = {"network": report["network"], "torch_device": report["torch_device"],
                            "ratios": report["ratios"]}
summary = {"gpu": gpu, "reason": reason, "gpu_name": name, "steps": steps, "benchmarks": benchmarks,
           "passed": all(s["skipped"] or s["exit"] == 0 for s in steps)}
fd, tmp = tempfile.mkstemp(dir=out, prefix=".summary.", suffix=".json")
with os.fdopen(fd, "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
os.chmod(tmp, 0o644)
os.replace(tmp, os.path.join(out, "summary.json"))
for arch, report in benchmarks.items():
    print(f"ratios, {arch.upper()} ({report['network']}; PyTorch on {report['torch_device']}):")
    for label, r in report["ratios"].items():
        target = f"   (target {r['target']:g} or below)" if r["target"] else ""
        print(f"  {label:<42} median {r['median']:6.2f}  fastest {r['fastest']:6.2f}{target}")
for s in steps:
    status = "skipped" if s["skipped"] else f"exit {s['exit']}"
    print(f"  {s['name']:<24} {status:<8} {s['seconds']:7.1f} s  {s['last_line'][:90]}")
print(f"summary: {os.path.join(out, 'summary.json')}")
sys.exit(0 if summary["passed"] else 1)
EOF
}

without_gpu() {   # without_gpu REASON
    say "no GPU here ($1): running the strict CuPy stand-in's tests on the CPU instead"
    if ! has_module pytest; then
        skip stand-in-tests "pytest is not installed for $PYTHON"
    else
        export MINIMF_STRICT_CUPY=1
        step stand-in-tests 120 "${PYTEST[@]}" tests/test_strict_cupy.py tests/test_gpu.py tests/test_real_cupy.py
    fi
    write_summary false "$1"
}

run_tests() {
    if ! has_module pytest; then
        skip tests "pytest is not installed for $PYTHON"
        return
    fi
    has_module hypothesis || say "note: no hypothesis: the test files that need it are not collected"
    step test-gpu 80 "${PYTEST[@]}" --durations=5 tests/test_gpu.py tests/test_real_cupy.py
    step pytest-m-gpu 40 "${PYTEST[@]}" -m gpu --continue-on-collection-errors tests/
    # shellcheck disable=SC2046
    step pytest-k-cupy 70 "${PYTEST[@]}" --durations=5 -k cupy --continue-on-collection-errors $(backend_test_files)
}

run_cli() {
    if ! has_module tqdm; then
        skip cli "tqdm is not installed for $PYTHON (minimf.train needs it)"
        return
    fi
    local train=("$PYTHON" -m minimf.train --backend cupy --epochs 1 --no-progress)
    step train-mf-mlp 35 "${train[@]}" --algo mf
    step train-bp-mlp 35 "${train[@]}" --algo bp
    step train-mf-cnn 35 "${train[@]}" --algo mf --arch cnn --train-subset 5000 --test-subset 2000
    step train-bp-cnn 35 "${train[@]}" --algo bp --arch cnn --train-subset 5000 --test-subset 2000
}

run_benchmarks() {
    if ! has_module tqdm; then
        skip benchmarks "tqdm is not installed for $PYTHON (epoch_time.py imports minimf.training)"
        return
    fi
    if has_module torch; then
        "$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA available:', torch.cuda.is_available())"
    else
        say "note: no torch: the benchmarks run without PyTorch rows (minimf ratios only)"
    fi
    step launch-model 10 "$PYTHON" benchmarks/launch_model.py
    local bench=("$PYTHON" benchmarks/epoch_time.py --backend cupy)
    step epoch-time-mlp 60 "${bench[@]}" --hidden 1000 1000 --batch-size 256 --json "$OUT/epoch_time_mlp.json"
    step epoch-time-cnn 60 "${bench[@]}" --arch cnn --fraction 0.2 --repeats 2 --json "$OUT/epoch_time_cnn.json"
    step mixer-memory 20 "$PYTHON" benchmarks/mixer_memory.py --backend cupy
}

main() {
    cd "$ROOT" || exit 1
    say "minimf GPU check: $ROOT, $("$PYTHON" --version 2>&1), output in $OUT"
    local name
    name="$(gpu_name)"
    [ -n "$name" ] && say "nvidia-smi: $name"
    if ! has_module numpy; then
        say "error: numpy is not installed for $PYTHON: nothing can run"
        record numpy 1 0 "numpy is not installed"
        write_summary false "numpy is not installed"
        return 1
    fi
    local found
    if ! found="$(detect_gpu 2>&1)"; then
        without_gpu "$(printf '%s' "$found" | tail -n 1)"
        return
    fi
    say "GPU: $found"
    unset MINIMF_STRICT_CUPY            # real CuPy, never the stand-in
    run_tests
    run_cli
    run_benchmarks
    write_summary true "$found"
}

if [ -n "$PROBE_ONLY" ]; then
    detect_gpu
    exit $?
fi
main "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
