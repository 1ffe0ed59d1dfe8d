#!/usr/bin/env bash
# cargo for the CUDA build: `scripts/cuda/cargo.sh build --release ...`
# (what `make build CUDA=1` and `make test-cuda` run; mk/cuda.mk sets the
# variables below).
#
# - The CUDA compiler: the system's nvcc when there is one (NVCC, PATH or
#   CUDA_HOME), else CUDA's own pip wheels of the pinned version, installed
#   once into CUDA_TOOLKIT_DIR (no root, no system package): nvcc, its
#   front end and NVVM, the runtime headers and the C++ headers (about 270 MB).
#   No CUDA library is needed to link: cudarc loads them at run time.
# - candle's kernels are compiled to PTX for compute capability
#   CUDA_COMPUTE_CAP; the driver compiles that PTX for the GPU it runs on,
#   so one build serves that capability and every newer one.
# - Sources: Cargo.lock's crates through scripts/cuda/vendor.py's directory
#   (two build scripts patched), in CUDA_TARGET_DIR, so the CPU build in
#   target/release is never touched.
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${CUDA_VERSION:=13.0}"
: "${CUDA_WHEELS:=nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85}"
: "${CUDA_TOOLKIT_DIR:=$HOME/.cache/marlhf/cuda-$CUDA_VERSION}"
: "${CUDA_COMPUTE_CAP:=80}"
: "${CUDA_TARGET_DIR:=target/cuda}"
: "${CUDA_PYTHON:=python3}"
CARGO=${CARGO:-cargo}

say() { echo "cuda: $*" >&2; }
die() { echo "error: cuda: $*" >&2; exit 1; }

# The compiler: NVCC, nvcc on PATH, $CUDA_HOME/bin/nvcc, /usr/local/cuda.
nvcc=${NVCC:-}
if [ -z "$nvcc" ]; then
  for c in "$(command -v nvcc || true)" "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" /usr/local/cuda/bin/nvcc; do
    if [ -n "$c" ] && [ -x "$c" ]; then nvcc=$c; break; fi
  done
fi
if [ -z "$nvcc" ]; then
  root=$CUDA_TOOLKIT_DIR/nvidia/cu${CUDA_VERSION%%.*}
  if [ ! -f "$CUDA_TOOLKIT_DIR/.installed" ]; then
    say "no nvcc here: installing CUDA $CUDA_VERSION's compiler from PyPI into $CUDA_TOOLKIT_DIR"
    "$CUDA_PYTHON" -m pip --version >/dev/null 2>&1 ||
      die "no nvcc and no '$CUDA_PYTHON -m pip' to install one (install a CUDA toolkit, or pip; or set NVCC=/path/to/nvcc)"
    rm -rf "$CUDA_TOOLKIT_DIR"
    # shellcheck disable=SC2086 # a list of requirements
    PIP_ROOT_USER_ACTION=ignore "$CUDA_PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
      --target "$CUDA_TOOLKIT_DIR" $CUDA_WHEELS ||
      die "pip could not install $CUDA_WHEELS"
    [ -x "$root/bin/nvcc" ] || die "$root/bin/nvcc: not in the wheels"
    touch "$CUDA_TOOLKIT_DIR/.installed"
  fi
  nvcc=$root/bin/nvcc
fi
cuda_home=$(cd "$(dirname "$nvcc")/.." && pwd)
release=$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p')
[ -n "$release" ] || die "$nvcc --version: no release number in its output"
read -r major minor <<<"$release"
export PATH="$cuda_home/bin:$PATH" CUDA_HOME="$cuda_home" NVCC="$nvcc"
# cudarc's bindings and marlhf's start-up checks (device/cuda.rs) for this
# version; candle's kernels for this compute capability.
export CUDARC_CUDA_VERSION=$((major * 1000 + minor * 10)) CUDA_COMPUTE_CAP

# The sources, as Cargo.lock pins them.
"$CARGO" fetch --locked --quiet
vendor=$CUDA_TARGET_DIR/vendor
mkdir -p "$vendor"
"$CUDA_PYTHON" scripts/cuda/vendor.py Cargo.lock "${CARGO_HOME:-$HOME/.cargo}" "$vendor"
say "nvcc $major.$minor ($nvcc), PTX for compute capability ${CUDA_COMPUTE_CAP%?}.${CUDA_COMPUTE_CAP: -1} and newer, into $CUDA_TARGET_DIR"

mkdir -p "$vendor"
vendor=$(cd "$vendor" && pwd -P)
# The subcommand first, then ours: arguments after `--` are the test
# binaries'.
[ $# -ge 1 ] || die "usage: scripts/cuda/cargo.sh SUBCOMMAND [ARGS...]"
sub=$1
shift
exec "$CARGO" --config 'source.crates-io.replace-with="marlhf-cuda"' \
  --config "source.marlhf-cuda.directory=\"$vendor\"" \
  "$sub" --locked --target-dir "$CUDA_TARGET_DIR" "$@"
