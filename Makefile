# marlhf — the MA-RLHF pipeline as file-based make targets.
#
#   make pipeline TASK=hh-rlhf            # everything, cached by files
#   make sft | rm | ppo | eval            # one stage (and what it needs)
#   make compare TASK=hh-rlhf             # PPO vs MA-PPO over seeds, with confidence intervals
#   make test                             # all tests (what CI runs)
#   make bench                            # throughput benchmarks
#   make bench-compare                    # the same beside PyTorch (installs it once)
#   make repro-check                      # which CPU differences change output bytes (root, qemu-user)
#
# Every stage writes its outputs atomically, so a file that exists is
# complete; make reruns a stage when an input is newer than its output.
# Stage binaries are order-only prerequisites: rebuilding the code does not
# invalidate finished results (delete a stage's output to redo it).

TASK ?= hh-rlhf
NAME ?= default
PRESET ?= tiny
RAW ?= ../shared/data
DEVICE ?= cpu
SEED ?= 1234
CARGO ?= cargo
# ---------------------------------------------------------------- CUDA
# CUDA=1: every target builds and runs the binaries with candle's CUDA
# backend, in $(CUDA_TARGET_DIR)/release (the CPU build in target/release
# stays as it is); `make pipeline CUDA=1 DEVICE=cuda` on a GPU machine. No
# CUDA toolkit needed to build (mk/cuda.mk).
CUDA ?=
CUDA_TARGET_DIR ?= target/cuda
# ----------------------------------------------------------------
# PORTABLE=1: the same output bytes on every x86-64 CPU with AVX2 and FMA,
# at a cost in speed (README, "Reproducibility across machines"). Give the
# run its own NAME: finished stages are not redone when it changes.
PORTABLE ?=
ifneq ($(PORTABLE),)
export MARLHF_PORTABLE := $(PORTABLE)
endif
# Extra flags per stage, e.g. PREPARE_ARGS="--limit 500" SFT_ARGS="--max-steps 20".
PREPARE_ARGS ?=
SFT_ARGS ?=
RM_ARGS ?=

RUN ?= runs/$(TASK)/$(NAME)
BIN := $(if $(CUDA),$(CUDA_TARGET_DIR)/release,target/release)

include mk/lora.mk
# The files whose presence means the SFT and reward-model checkpoints are
# complete (recursive: the task fragments below use them in rules, after
# setting SFT_IMPORT).
SFT_DONE = $(RUN)/sft/$(call ck_weights,$(if $(SFT_IMPORT),,$(SFT_LORA_RANK)))
RM_DONE = $(RUN)/rm/$(call ck_weights,$(RM_LORA_RANK))

ifeq ($(wildcard pipelines/$(TASK).mk),)
$(error unknown TASK "$(TASK)": expected one of $(basename $(notdir $(wildcard pipelines/*.mk))))
endif
ifeq ($(wildcard pipelines/presets/$(PRESET).mk),)
$(error unknown PRESET "$(PRESET)": expected one of $(basename $(notdir $(wildcard pipelines/presets/*.mk))))
endif
include pipelines/presets/$(PRESET).mk
include pipelines/$(TASK).mk

.DEFAULT_GOAL := help
.PHONY: help build pipeline prepare tokenizer sft rm test bench bench-compare repro-check lint fmt clean-run print-run

help:
	@echo "make pipeline TASK=hh-rlhf [PRESET=tiny|small] [NAME=default]   run every stage"
	@echo "make prepare|tokenizer|sft|rm|ppo|eval                         run one stage"
	@echo "make compare TASK=hh-rlhf [SEEDS=...] [TERMINATIONS=...]       PPO vs MA-PPO over seeds, with 95% intervals"
	@echo "make test                                                       run all tests"
	@echo "make bench                                                      throughput benchmarks"
	@echo "make bench-compare                                              the same beside PyTorch on this machine"
	@echo "make build CUDA=1 | test-cuda | gpu-check                      the GPU build, its tests, the GPU check kit (mk/cuda.mk)"
	@echo "make repro-check                                                which CPU differences change output bytes"
	@echo "outputs: $(RUN)/  (inspect any Parquet file with $(BIN)/marlhf-inspect FILE)"

build:
ifeq ($(CUDA),)
	@$(CARGO) build --release --workspace --bins
else
	@$(CUDA_CARGO) $(CUDA_BUILD_ARGS)
endif

$(BIN)/marlhf-%: build ;

# The pass@k sandbox runs each generated program under bubblewrap (bwrap:
# mount, PID, network, IPC and user namespaces). As root on Debian/Ubuntu a
# missing bwrap is installed; otherwise one line says what to install.
.PHONY: bwrap
bwrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "==> installing bubblewrap (the pass@k sandbox)"; \
	    { apt-get install -y -qq bubblewrap || { apt-get update -qq && apt-get install -y -qq bubblewrap; }; } >/dev/null \
	      || { echo "make: cannot install bubblewrap with apt-get; the pass@k sandbox needs it" >&2; exit 1; }; \
	  else \
	    echo "make: bubblewrap (bwrap) is missing; the pass@k sandbox needs it: install the package bubblewrap (e.g. sudo apt-get install bubblewrap)" >&2; exit 1; \
	  fi; }

# ---------------------------------------------------------------- prepare
# A task with raw data prepares it; a task that makes its own data (stories)
# sets DATA_FILES and PREPARE_COMMAND in its pipelines/<task>.mk.
RAW_FILES := $(shell find $(RAW)/$(TASK) -type f 2>/dev/null)
DATA_FILES ?= $(addprefix $(RUN)/data/,sft.parquet pairs.parquet prompts.parquet validation_prompts.parquet eval_prompts.parquet)
PREPARE_COMMAND ?= $(BIN)/marlhf-prepare --task $(TASK) --raw $(RAW) --out $(RUN)/data --seed $(SEED) $(PREPARE_ARGS)

$(DATA_FILES) &: $(RAW_FILES) | $(BIN)/marlhf-prepare
	@echo "==> prepare ($(TASK))"
	$(PREPARE_COMMAND)

prepare: $(DATA_FILES)

# ---------------------------------------------------------------- tokenizer
$(RUN)/tokenizer.json: $(DATA_FILES) | $(BIN)/marlhf-tokenizer
	@echo "==> tokenizer"
	$(BIN)/marlhf-tokenizer --data $(RUN)/data --out $@ --vocab-size $(VOCAB_SIZE)

tokenizer: $(RUN)/tokenizer.json

# ---------------------------------------------------------------- sft
# SFT_IMPORT: a llama2.c checkpoint imported as the SFT model instead of
# training one (the stories task's pretrained stories260K).
ifneq ($(SFT_IMPORT),)
$(SFT_DONE): $(SFT_IMPORT) | $(BIN)/marlhf-import
	@echo "==> sft (import $(SFT_IMPORT))"
	$(BIN)/marlhf-import --model $(SFT_IMPORT) --tokenizer $(SFT_IMPORT_TOKENIZER) --out $(RUN)/sft
else
# SFT_INIT: a pretrained checkpoint to fine-tune (needed for SFT_LORA_RANK)
# instead of a fresh model with the task's trained tokenizer.
SFT_INIT ?=
sft_model_flags = $(if $(SFT_INIT),--init $(SFT_INIT),--tokenizer $(RUN)/tokenizer.json \
	  --hidden $(MODEL_HIDDEN) --layers $(MODEL_LAYERS) --heads $(MODEL_HEADS) \
	  --mlp $(MODEL_MLP) --max-positions $$(( $(MAX_PROMPT_TOKENS) + $(MAX_COMPLETION_TOKENS) )))
$(SFT_DONE): $(RUN)/data/sft.parquet $(if $(SFT_INIT),,$(RUN)/tokenizer.json) | $(BIN)/marlhf-sft
	@echo "==> sft"
	$(BIN)/marlhf-sft --data $(RUN)/data/sft.parquet --out $(RUN)/sft $(sft_model_flags) \
	  --lr $(SFT_LR) --epochs $(SFT_EPOCHS) --batch-size $(SFT_BATCH) \
	  --max-prompt-tokens $(MAX_PROMPT_TOKENS) --max-completion-tokens $(MAX_COMPLETION_TOKENS) \
	  --seed $(SEED) --device $(DEVICE) $(call lora_flags,SFT) $(SFT_ARGS)
endif

sft: $(SFT_DONE)

# ---------------------------------------------------------------- rm
$(RM_DONE): $(RUN)/data/pairs.parquet $(SFT_DONE) | $(BIN)/marlhf-rm
	@echo "==> rm"
	$(BIN)/marlhf-rm --data $(RUN)/data/pairs.parquet --init $(RUN)/sft --out $(RUN)/rm \
	  --lr $(RM_LR) --epochs $(RM_EPOCHS) --batch-size $(RM_BATCH) \
	  --max-prompt-tokens $(MAX_PROMPT_TOKENS) --max-completion-tokens $(MAX_COMPLETION_TOKENS) \
	  --seed $(SEED) --device $(DEVICE) $(call lora_flags,RM) $(RM_ARGS)

rm: $(RM_DONE)

# ---------------------------------------------------------------- ppo, eval
# The PPO loop and the evaluation stage live in their own fragments.
-include mk/ppo.mk
-include mk/eval.mk
-include mk/compare.mk
-include mk/cuda.mk

# The whole method: vanilla PPO (n = 1) and MA-PPO (n = 5) from the same
# SFT model and reward model, then the evaluation report. PIPELINE_GOALS is
# extended by the fragments above.
PIPELINE_GOALS ?= $(RM_DONE)

pipeline: $(PIPELINE_GOALS)
	@echo "==> pipeline $(TASK) ($(PRESET)) complete: $(RUN)/"
	@if [ -f $(RUN)/eval/report.md ]; then grep '^|' $(RUN)/eval/report.md; \
	  echo "report: $(RUN)/eval/report.md (plots beside it)"; fi

# ---------------------------------------------------------------- dev
# The end-to-end tests run the stage binaries, so build them first (same
# profile as the tests: one compilation of the dependency tree). Tests that
# read the workplace's data in ../shared are #[ignore = "needs ../shared"],
# so a plain `cargo test` lists them as ignored; make runs them too, and a
# missing file fails them.
test: bwrap
	$(CARGO) build --release --workspace --bins
	$(CARGO) test --release --workspace -- --include-ignored

# The benchmark binary is built with the workspace (`make build`), so the
# features of its dependencies are the workspace's and nothing recompiles
# (`cargo run -p marlhf-bench` would resolve them for that package alone).
bench: build
	$(BIN)/marlhf-bench --reps $(BENCH_REPS) --device $(DEVICE) $(BENCH_ARGS)

# bench-compare: PyTorch + transformers in a virtual environment outside the
# source tree, created on first use (several GB: PyPI's Linux torch wheel
# is the CUDA build, which runs on the CPU too). Both sides run back to
# back and one table compares them.
BENCH_VENV ?= $(HOME)/.cache/marlhf/bench-venv
BENCH_PYTHON ?= python3
BENCH_PIP ?= torch==2.15.0 transformers==5.24.0
# Timed repetitions per measurement (the best counts), both sides.
BENCH_REPS ?= 3
# Extra marlhf-bench flags, e.g. BENCH_ARGS="--only train".
BENCH_ARGS ?=

$(BENCH_VENV)/.installed:
	@command -v $(BENCH_PYTHON) >/dev/null || { echo "bench-compare: $(BENCH_PYTHON) not found (set BENCH_PYTHON)"; exit 1; }
	@$(BENCH_PYTHON) -m venv $(BENCH_VENV) || { echo "bench-compare: cannot create a virtual environment at $(BENCH_VENV) (Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }
	$(BENCH_VENV)/bin/pip install $(BENCH_PIP)
	touch $@

bench-compare: build $(BENCH_VENV)/.installed
	@mkdir -p target/bench
	$(BENCH_VENV)/bin/python bench/pytorch_reference.py --reps $(BENCH_REPS) --device $(DEVICE) --json target/bench/pytorch.json
	$(BIN)/marlhf-bench --reps $(BENCH_REPS) --device $(DEVICE) --reference target/bench/pytorch.json $(BENCH_ARGS)

# repro-check: the stages and a fingerprint workload under emulated CPUs
# (other L1 caches, other instruction sets) in both arithmetic modes,
# compared byte for byte (DESIGN.md, "Reproducibility across machines").
# Needs root and qemu-user (installed with apt-get when missing); a few
# minutes natively plus a few per emulated CPU.
repro-check: build
	scripts/repro-check.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-run:
	rm -rf $(RUN)

# The run directory these settings use (for scripts: scripts/tune-stories.sh).
print-run:
	@echo $(RUN)
