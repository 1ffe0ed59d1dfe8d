#!/usr/bin/env bash
# The GPU check (README, "GPU"): on a machine with one NVIDIA GPU, a driver
# and CUDA 13's cuBLAS and cuRAND (a CUDA toolkit, or PyTorch's pip wheels),
# no Rust needed. Every command runs under `timeout`; the whole fits five
# minutes (the limits below add up to 285 s). It writes, under --out:
#
#   result.md      the one-page result: the GPU, each step's verdict and time,
#                  the parity table, the pipeline's checks, the throughput
#                  table beside PyTorch, the GPU memory of each measurement
#   *.log, *.json  each step's output
#
#   (a) parity: log-probabilities of the nine Hugging Face fixtures in f32,
#       bf16 and f16 against transformers' references and against the CPU;
#   (b) a short pipeline on the GPU (SFT, RM, PPO fixed:1 and fixed:5 for two
#       iterations, evaluation) run twice: every file well-formed, and the
#       same bytes both times (or the files that differ named);
#   (c) throughput beside PyTorch on the same GPU: the `make bench` shapes
#       in f32, and a Gemma-2B-shaped model (random weights) in bf16;
#   (d) result.md.
#
# usage: run.sh [--out DIR] [--device cuda:N] [--python PYTHON] [--dry-run]
#   --dry-run   on the CPU: every `cuda` becomes `cpu`, the Gemma shape is cut
#               to one layer of width 256 and a 4096-token vocabulary, in f32,
#               the time limits are 20 times longer; tests this script (make
#               test-cuda)
#   --python    the Python with torch and transformers for the PyTorch side
#               (default: python3; without torch that part is skipped)
set -uo pipefail
kit=$(cd "$(dirname "$0")" && pwd)
out=$PWD/gpu-check-result device=cuda python=python3 dry=
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --dry-run) dry=1; device=cpu; shift ;;
    *) echo "error: gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/*.log "$out"/*.json "$out/steps.tsv" "$out/result.md"
scale=1 gemma=(--gemma) bench_dtype=bf16 reps=2 gemma_reps=1
if [ -n "$dry" ]; then
  scale=20 gemma=(--gemma --gemma-layers 1 --gemma-vocab 4096 --gemma-hidden 256) bench_dtype=f32 reps=1
fi
echo "dry_run	${dry:-0}" >"$out/setup.tsv"
echo "device	$device" >>"$out/setup.tsv"

# step NAME SECONDS COMMAND...: runs it under timeout, output to NAME.log,
# its status and time to steps.tsv.
step() {
  local name=$1 limit=$(($2 * scale)) start rc
  shift 2
  echo "==> $name (limit ${limit}s)" >&2
  start=$(date +%s%N)
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((($(date +%s%N) - start) / 1000000))" "$limit" >>"$out/steps.tsv"
  [ $rc -eq 0 ] || echo "    $name: exit $rc, last line: $(tail -n 1 "$out/$name.log")" >&2
  return $rc
}
report() {
  python3 "$kit/check.py" report "$out" >"$out/result.md.tmp" && mv "$out/result.md.tmp" "$out/result.md"
  echo "gpu-check: $out/result.md" >&2
}
command -v python3 >/dev/null || { echo "error: gpu-check: python3 is needed (for the checks and the report)" >&2; exit 1; }

# ---------------------------------------------------------------- the GPU
if [ -z "$dry" ]; then
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out/nvidia-smi.log" 2>&1
    echo "gpu	$(head -n 1 "$out/nvidia-smi.log")" >>"$out/setup.tsv"
  fi
  # cuBLAS and cuRAND of CUDA 13 where the loader does not find them: a
  # toolkit's lib64, or the pip wheels PyTorch brings.
  if ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.13'; then
    dirs=$(
      for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64; do echo "$d"; done
      "$python" - 2>/dev/null <<'EOF'
import glob, os
try:
    import nvidia
    for root in nvidia.__path__:
        for lib in glob.glob(os.path.join(root, "*", "lib")):
            print(lib)
except ImportError:
    pass
EOF
    )
    for d in $dirs; do
      if ls "$d"/libcublas.so.13* "$d"/libcurand.so.10* >/dev/null 2>&1; then
        export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      elif ls "$d"/libcublas.so.13* >/dev/null 2>&1 || ls "$d"/libcurand.so.10* >/dev/null 2>&1; then
        export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      fi
    done
  fi
  echo "ld_library_path	${LD_LIBRARY_PATH:-}" >>"$out/setup.tsv"
fi

# The first use of the GPU: the driver, the libraries, the capability and one
# GEMM. A missing library or a driver mismatch stops here, in one line.
if ! step probe 30 "$kit/bin/marlhf-bench" --device "$device" --only none --reps 1 --json "$out/probe.json"; then
  echo "gpu-check: the GPU cannot be used: $(tail -n 1 "$out/probe.log")" >&2
  report
  exit 1
fi

# ---------------------------------------------------------------- (a) parity
step parity 30 "$kit/bin/marlhf-bench" --parity "$kit/fixtures/hf-tiny" --device "$device" --json "$out/parity.json"

# ---------------------------------------------------------------- (b) pipeline
mapfile -t settings < <(python3 "$kit/check.py" settings)
for run in run1 run2; do
  rm -rf "${out:?}/$run"
  cp -rp "$kit/inputs" "$out/$run"
  step "pipeline-$run" 50 make --no-print-directory -C "$kit/make" pipeline BIN="$kit/bin" CARGO=true \
    RAW=/nonexistent RUN="$out/$run" DEVICE="$device" "${settings[@]}"
done
step wellformed 10 python3 "$kit/check.py" wellformed "$out/run1"
step same-bytes 10 python3 "$kit/check.py" compare "$out/run1" "$out/run2"

# ---------------------------------------------------------------- (c) throughput
torch_ok=
if "$python" -c 'import torch, transformers' 2>/dev/null; then
  torch_ok=1
else
  echo "pytorch	skipped: $python has no torch and transformers" >>"$out/setup.tsv"
fi
if [ -n "$torch_ok" ]; then
  step torch-f32 25 "$python" "$kit/bench/pytorch_reference.py" --device "$device" --dtype f32 --reps "$reps" --json "$out/torch-f32.json"
fi
# PyTorch's figures beside marlhf's where its step wrote them.
theirs() { if [ -f "$out/$1.json" ]; then echo "--reference=$out/$1.json"; fi; }
step marlhf-f32 25 "$kit/bin/marlhf-bench" --device "$device" --dtype f32 --reps "$reps" --json "$out/marlhf-f32.json" \
  $(theirs torch-f32)
if [ -n "$torch_ok" ]; then
  step torch-gemma 30 "$python" "$kit/bench/pytorch_reference.py" --device "$device" --dtype "$bench_dtype" \
    --reps "$gemma_reps" --only gemma "${gemma[@]}" --json "$out/torch-gemma.json"
fi
step marlhf-gemma 45 "$kit/bin/marlhf-bench" --device "$device" --dtype "$bench_dtype" --reps "$gemma_reps" \
  --only gemma "${gemma[@]}" --json "$out/marlhf-gemma.json" $(theirs torch-gemma)

# ---------------------------------------------------------------- (d) result
report
python3 "$kit/check.py" verdict "$out"
