#!/usr/bin/env bash
# One command for a CUDA machine: the GPU tests, the network benchmarks and the sampler benchmark,
# ending with one table (docs/performance.md says how to read it). Sized for < 10 min on one H200.
#
#   scripts/gpu_check.sh [--official PATH] [--batch 128] [--quick]
#
#   --official PATH   also time the official score_sde_pytorch (PATH: it, or a folder holding it)
#                     fp32 against ours in fp32, channels_last, bf16 and bf16 + channels_last
#                     (training steps and memory), then, in a step of its own, against ours in
#                     bf16 + channels_last + torch.compile (the target); this replaces the
#                     separate bench_nets run, whose modes it covers
#   --quick           fewer rounds, DDPM++ only (a smoke run)
# On a machine without a CUDA GPU it prints "no GPU" and exits 0 (CI runs that path).
# Environment: PYTHON (default .venv/bin/python), GPU_CHECK_LOGS (the log folder; default a new
# temporary one).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OFFICIAL="" BATCH=128 ROUNDS=5 NETS="ncsnpp ddpmpp"
while [ $# -gt 0 ]; do
  case "$1" in
    --official) OFFICIAL="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --quick) ROUNDS=2 NETS="ddpmpp"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "no GPU"
  exit 0
fi

OUT=${GPU_CHECK_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$OUT"
status=0
summary=()
run() {  # run NAME TIMEOUT_S CMD...: log to $OUT/NAME.log, keep going on failure
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name: $*" | tee "$OUT/$name.log"
  timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.log"
  summary+=("| $name | $([ $rc -eq 0 ] && echo ok || echo "FAILED (rc $rc)") | $((SECONDS - t0)) s |")
  [ $rc -eq 0 ] || status=1
}

"$PY" - <<'EOF' | tee "$OUT/device.txt"
import torch
p = torch.cuda.get_device_properties(0)
print(f"# GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}; torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
EOF

# 1. the networks: against the official code when given (its fp32 step is the baseline), else ours
#    alone (fp32 vs channels_last, bf16, compile and all three; fwd + bwd, img/s); the compiled
#    comparison with the official code is step 4
if [ -n "$OFFICIAL" ]; then
  run bench_official 150 "$PY" scripts/bench_nets.py --official "$OFFICIAL" --device cuda --nets $NETS \
    --batch "$BATCH" --rounds "$ROUNDS" --official-modes train memory \
    --ours "cl:memory_format=channels_last" --ours "bf16:autocast=bf16" \
    --ours "bf16_cl:autocast=bf16,memory_format=channels_last"
else
  run bench_nets 300 "$PY" scripts/bench_nets.py --device cuda --nets $NETS --batch "$BATCH" --rounds "$ROUNDS" \
    --modes fp32 channels_last bf16 fast infer --no-memory
fi

# 2. GPU tests: fp32 parity with the CPU, channels_last + recompute, bf16 autocast, compile, sampling
run tests 120 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_perf_gpu.py

# 3. the samplers on the GPU: wall time over time in the score network, and bookkeeping per step
run bench_sampling 45 "$PY" scripts/bench_sampling.py --device cuda --repeats 2

# 4. against the official code, compiled: last, with its own limit (on an H200 machine with torch
#    2.11 and 16 CPU cores, two compiled NCSN++ variants had not finished compiling after 250 s)
if [ -n "$OFFICIAL" ]; then
  run bench_compiled 240 "$PY" scripts/bench_nets.py --official "$OFFICIAL" --device cuda --nets $NETS \
    --batch "$BATCH" --rounds "$ROUNDS" --official-modes train \
    --ours "fast:autocast=bf16,memory_format=channels_last,compile=true"
fi

echo
cat "$OUT/device.txt"
echo "| step | result | wall |"
echo "| --- | --- | --- |"
printf '%s\n' "${summary[@]}"
for log in bench_official bench_compiled; do
  [ -f "$OUT/$log.log" ] && { echo; sed -n '/^| net | measure/,$p' "$OUT/$log.log"; }
done
echo
grep -E "^(ncsnpp|ddpmpp) " "$OUT/bench_nets.log" 2>/dev/null
echo "(logs: $OUT)"
exit $status
