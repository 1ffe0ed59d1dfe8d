#!/usr/bin/env bash
# Packs the GPU check kit (`make gpu-check`): the stripped stage binaries of
# --bin, the nine Hugging Face fixtures, a prepared slice of HH-RLHF with its
# tokenizer, the make fragments, the PyTorch benchmark and the check itself
# (run.sh, check.py) in one tar.xz under 40 MB. On the GPU machine:
#
#   tar -xf marlhf-gpu-check.tar.xz && marlhf-gpu-check/run.sh
#
# usage: pack.sh --bin DIR --out FILE [--fast] [--shared DIR]
#   --fast    a plain tar, no size limit (the CPU dry run)
set -euo pipefail
cd "$(dirname "$0")/../.."

bin= out= fast= shared=${MARLHF_SHARED:-../shared}
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fast) fast=1; shift ;;
    --shared) shared=$2; shift 2 ;;
    *) echo "error: gpu-check pack: unknown argument $1" >&2; exit 2 ;;
  esac
done
die() { echo "error: gpu-check pack: $*" >&2; exit 1; }
[ -n "$bin" ] && [ -n "$out" ] || die "usage: pack.sh --bin DIR --out FILE [--fast]"
# The kit's limit: what a short GPU lease copies in comfortably.
limit_mb=40

# What the check runs on the GPU machine (prepare and tokenizer run here).
stages="sft rm rollout segment update eval score bench"
for b in $stages prepare tokenizer; do
  [ -x "$bin/marlhf-$b" ] || die "$bin/marlhf-$b: missing (build first: make build CUDA=1)"
done
fixtures=$shared/fixtures/hf-tiny
[ -f "$fixtures/llama/reference.json" ] || die "$fixtures: the Hugging Face fixtures are missing"
[ -d "$shared/data/hh-rlhf" ] || die "$shared/data/hh-rlhf: the HH-RLHF data are missing"

stage=$(dirname "$out")/stage
kit=$stage/marlhf-gpu-check
rm -rf "$stage"
mkdir -p "$kit/bin" "$kit/fixtures" "$kit/make" "$kit/bench"

for b in $stages; do
  if command -v strip >/dev/null; then
    strip -o "$kit/bin/marlhf-$b" "$bin/marlhf-$b"
  else
    cp "$bin/marlhf-$b" "$kit/bin/"
  fi
done
cp -r "$fixtures" "$kit/fixtures/hf-tiny"
rm -f "$kit/fixtures/hf-tiny/make_models.py"
cp Makefile "$kit/make/"
cp -r mk pipelines "$kit/make/"
cp bench/pytorch_reference.py "$kit/bench/"
cp scripts/gpu-check/run.sh scripts/gpu-check/check.py "$kit/"

# The pipeline's inputs, made here with the settings run.sh trains with
# (check.py's PIPELINE), so the GPU machine needs neither the raw data nor
# the prepare and tokenizer stages. make then finds them up to date.
abs_bin=$(cd "$bin" && pwd)
inputs=$kit/inputs
mapfile -t settings < <(python3 "$kit/check.py" settings)
make --no-print-directory -s -C "$kit/make" prepare tokenizer BIN="$abs_bin" CARGO=true \
  RUN="$(cd "$kit" && pwd)/inputs" RAW="$(cd "$shared/data" && pwd)" "${settings[@]}" >/dev/null ||
  die "preparing the pipeline's inputs failed"
[ -f "$inputs/tokenizer.json" ] || die "$inputs/tokenizer.json: not made"

mkdir -p "$(dirname "$out")"
if [ -n "$fast" ]; then
  tar -cf "$out" -C "$stage" marlhf-gpu-check
else
  # One xz stream with a 64 MiB dictionary: the binaries share most of
  # their code, so each after the first costs a fraction of its size.
  tar -cf - -C "$stage" marlhf-gpu-check | xz -9 -T1 >"$out.tmp"
  mv "$out.tmp" "$out"
  size=$(($(stat -c %s "$out") / 1048576))
  [ "$size" -lt "$limit_mb" ] || die "$out: $size MB, over the kit's $limit_mb MB"
fi
rm -rf "$stage"
echo "gpu-check kit: $out ($(du -h "$out" | cut -f1)); on the GPU machine: tar -xf $(basename "$out") && marlhf-gpu-check/run.sh" >&2
