# The GPU build and its checks (README, "GPU"; DESIGN.md, "Devices").
#
#   make build CUDA=1                  the binaries with candle's CUDA backend, in $(CUDA_TARGET_DIR)/release
#   make pipeline CUDA=1 DEVICE=cuda   every stage on the GPU (any target takes CUDA=1: it runs those binaries)
#   make test-cuda                     every binary with `--features cuda`, the tests that run without a GPU,
#                                      and the GPU check's CPU dry run (CI runs it after `make test`)
#   make gpu-check                     the GPU check kit: $(GPU_CHECK_KIT), for a GPU machine without Rust
#
# scripts/cuda/cargo.sh does the building: with the system's nvcc where there
# is one, else with CUDA's compiler installed from PyPI (CUDA_VERSION, pinned
# wheels in CUDA_WHEELS, into CUDA_TOOLKIT_DIR); candle's kernels as PTX for
# CUDA_COMPUTE_CAP and newer. Its defaults are the script's; set any of these
# variables on make's command line to change them. The binaries link no
# CUDA library: they start without a driver, and open the driver, cuBLAS and
# cuRAND when `--device cuda` asks for a GPU.
#
# From the root Makefile: CUDA_TARGET_DIR, CARGO.

CUDA_CARGO = CUDA_TARGET_DIR=$(CUDA_TARGET_DIR) CARGO=$(CARGO) scripts/cuda/cargo.sh
# What `make test-cuda` and `make gpu-check` build.
CUDA_BUILD_ARGS = build --release --workspace --bins --features cuda

# The kit `make gpu-check` packs (stripped binaries, inputs, the check
# script; under 40 MB) and where its dry run on this CPU writes.
GPU_CHECK_KIT ?= target/gpu-check/marlhf-gpu-check.tar.xz
GPU_CHECK_DRY ?= target/gpu-check/dry-run
# The PyTorch side of the throughput table on the CPU dry run: a Python with
# torch and transformers (e.g. BENCH_VENV's), or empty to skip that part.
GPU_CHECK_PYTHON ?= $(if $(wildcard $(BENCH_VENV)/bin/python),$(BENCH_VENV)/bin/python)

.PHONY: test-cuda gpu-check gpu-check-dry

test-cuda:
	$(CUDA_CARGO) $(CUDA_BUILD_ARGS)
	$(CUDA_CARGO) test --release --workspace --exclude marlhf-e2e --features cuda -- --include-ignored
	$(MAKE) --no-print-directory gpu-check-dry GPU_CHECK_BIN=$(CUDA_TARGET_DIR)/release

gpu-check:
	$(CUDA_CARGO) $(CUDA_BUILD_ARGS)
	scripts/gpu-check/pack.sh --bin $(CUDA_TARGET_DIR)/release --out $(GPU_CHECK_KIT)

# The check itself, every `cuda` replaced by `cpu` and the shapes cut down,
# with the binaries of GPU_CHECK_BIN (the CPU build by default): tests the
# script, the kit's layout and every command it runs.
GPU_CHECK_BIN ?= $(BIN)
gpu-check-dry:
	scripts/gpu-check/pack.sh --bin $(GPU_CHECK_BIN) --out $(GPU_CHECK_DRY)/kit.tar --fast
	rm -rf $(GPU_CHECK_DRY)/kit && mkdir -p $(GPU_CHECK_DRY)/kit
	tar -xf $(GPU_CHECK_DRY)/kit.tar -C $(GPU_CHECK_DRY)/kit
	$(GPU_CHECK_DRY)/kit/marlhf-gpu-check/run.sh --dry-run --out $(GPU_CHECK_DRY)/result \
	  $(if $(GPU_CHECK_PYTHON),--python $(GPU_CHECK_PYTHON))
