# Evaluation: the SFT policy, the final vanilla-PPO policy (ppo-n1) and the
# final MA-PPO policy (ppo-n5) of seed PPO_SEED answer the same sample of
# evaluation prompts;
# the reward model scores every answer and judges MA-PPO against the others;
# the report gathers it all with the training curves.
#
#   make eval TASK=hh-rlhf                  # $(RUN)/eval/report.md
#   make eval EVAL_N=200 EVAL_MAX_NEW=64    # a quicker look
#   make eval EVAL_JUDGE=http EVAL_JUDGE_MODEL=gpt-4o   # GPT-4-style judge; key in $OPENAI_API_KEY
#   make eval TASK=apps                     # pass@k on the problems' tests instead of a judge
#   make serve SERVE_CHECKPOINT=runs/hh-rlhf/default/ppo-n5/seed-1234/iter-004/actor
#                                           # chat with a policy (OpenAI protocol, loopback)
#
# Files: eval/responses.parquet → eval/judgements.parquet (or, for apps,
# eval/passk.parquet) → eval/report.md with scores.png and reward_curves.png.
# A missing PPO run is made by `make ppo NGRAM=1|5` (recursively).
#
# From the root Makefile: TASK, RUN, BIN, DEVICE and a `$(BIN)/marlhf-%`
# rule; from mk/ppo.mk: ITERS, PPO_SEED and the run layout (ppo_run,
# ppo_final_actor). Everything below is a `?=` default a task preset or the
# command line may override.

EVAL_DIR ?= $(RUN)/eval
EVAL_PROMPTS ?= $(RUN)/data/eval_prompts.parquet
# Held out of the PPO prompts, disjoint from the evaluation prompts: what
# early stopping (mk/compare.mk) and tuning (scripts/tune-stories.sh)
# choose on, never the evaluation prompts.
VALIDATION_PROMPTS ?= $(RUN)/data/validation_prompts.parquet
VALIDATION_N ?= 200
# The final policy of a PPO run of ITERS iterations is iter-ITERS/actor.
EVAL_ITERS ?= $(or $(ITERS),1)
eval_final := iter-$(shell printf '%03d' $(EVAL_ITERS))
EVAL_SFT ?= $(RUN)/sft
EVAL_RM ?= $(RUN)/rm
EVAL_PPO_RUN ?= $(call ppo_run,fixed:1,$(PPO_SEED))
EVAL_MAPPO_RUN ?= $(call ppo_run,fixed:5,$(PPO_SEED))
EVAL_PPO ?= $(EVAL_PPO_RUN)/$(eval_final)/actor
EVAL_MAPPO ?= $(EVAL_MAPPO_RUN)/$(eval_final)/actor
# NAME=CHECKPOINT_DIR pairs; the names are the report's row labels.
EVAL_POLICIES ?= sft=$(EVAL_SFT) ppo=$(EVAL_PPO) ma-ppo=$(EVAL_MAPPO)
# NAME=metrics.parquet pairs drawn as reward curves.
EVAL_PPO_METRICS ?= ppo=$(EVAL_PPO_RUN)/metrics.parquet ma-ppo=$(EVAL_MAPPO_RUN)/metrics.parquet
EVAL_CURVE_METRIC ?= score_mean

# generate (the paper: 2000 prompts; temperature 0.8 and top-k 50 as in
# PPO's sampling; lengths as the models were trained)
EVAL_N ?= 2000
EVAL_SEED ?= $(or $(SEED),1234)
EVAL_MAX_PROMPT ?= $(or $(MAX_PROMPT_TOKENS),512)
EVAL_MAX_NEW ?= $(or $(MAX_COMPLETION_TOKENS),512)
EVAL_TEMPERATURE ?= 0.8
EVAL_TOP_K ?= 50
EVAL_TOP_P ?= 1.0
# EVAL_BATCH empty: marlhf-eval's default, 8 on the CPU, 64 on a GPU.
EVAL_BATCH ?=

# judge: policy A against each policy B on EVAL_JUDGE_SAMPLE prompts
# (the paper: 50). EVAL_JUDGE=rm (offline, the reward model) or http (any
# OpenAI-compatible endpoint).
EVAL_JUDGE ?= rm
EVAL_JUDGE_A ?= ma-ppo
EVAL_JUDGE_B ?= ppo sft
EVAL_JUDGE_SAMPLE ?= 50
EVAL_TIE_EPSILON ?= 1e-3
EVAL_JUDGE_URL ?= https://api.openai.com/v1
EVAL_JUDGE_MODEL ?= gpt-4o
EVAL_JUDGE_KEY_ENV ?= OPENAI_API_KEY
EVAL_JUDGE_TIMEOUT ?= 120
EVAL_JUDGE_RETRIES ?= 5

# apps: several programs per problem, pass@k on the tests, no reward model.
ifeq ($(TASK),apps)
EVAL_SAMPLES ?= 5
EVAL_K ?= 1,5
EVAL_SCORE_WITH_RM ?=
EVAL_PASSK_TIMEOUT ?= 4
EVAL_PASSK_MEMORY_MB ?= 1024
eval_judged := $(EVAL_DIR)/passk.parquet
eval_judged_args = --passk $(eval_judged) --k $(EVAL_K)
else
EVAL_SAMPLES ?= 1
EVAL_K ?= 1
EVAL_SCORE_WITH_RM ?= yes
eval_judged := $(EVAL_DIR)/judgements.parquet
eval_judged_args = --judgements $(eval_judged)
endif

eval_default_goal := $(.DEFAULT_GOAL)
eval_dirs = $(foreach p,$(1),$(lastword $(subst =, ,$(p))))
eval_rm_done := $(EVAL_RM)/$(call ck_weights,$(RM_LORA_RANK))

# A PPO run's metrics file comes with its final actor.
$(EVAL_PPO_RUN)/metrics.parquet: $(EVAL_PPO)/$(call ck_weights,$(PPO_LORA_RANK)) ;
$(EVAL_MAPPO_RUN)/metrics.parquet: $(EVAL_MAPPO)/$(call ck_weights,$(PPO_LORA_RANK)) ;

# How a policy answers prompts: scoring and sampling (here, for the
# validation prompts of mk/compare.mk and scripts/tune-stories.sh), and the
# evaluation prompts (here and in mk/compare.mk).
eval_sampling_args = $(if $(EVAL_SCORE_WITH_RM),--reward-model $(EVAL_RM)) \
	  --samples-per-prompt $(EVAL_SAMPLES) \
	  --max-prompt-tokens $(EVAL_MAX_PROMPT) --max-new-tokens $(EVAL_MAX_NEW) \
	  --temperature $(EVAL_TEMPERATURE) --top-k $(EVAL_TOP_K) --top-p $(EVAL_TOP_P) \
	  $(if $(EVAL_BATCH),--batch-size $(EVAL_BATCH)) --seed $(EVAL_SEED) --device $(DEVICE) \
	  $(if $(GOLD_MODEL),--gold-model $(GOLD_MODEL))
eval_generate_args = --prompts $(EVAL_PROMPTS) --n $(EVAL_N) $(eval_sampling_args)
# How the judge is set up (here and in mk/compare.mk).
eval_judge_args = --judge $(EVAL_JUDGE) --sample $(EVAL_JUDGE_SAMPLE) --seed $(EVAL_SEED) --task $(TASK) \
	  --reward-model $(EVAL_RM) --max-prompt-tokens $(EVAL_MAX_PROMPT) --tie-epsilon $(EVAL_TIE_EPSILON) \
	  --device $(DEVICE) --base-url $(EVAL_JUDGE_URL) --model $(EVAL_JUDGE_MODEL) \
	  --api-key-env $(EVAL_JUDGE_KEY_ENV) --timeout $(EVAL_JUDGE_TIMEOUT) --retries $(EVAL_JUDGE_RETRIES)
eval_judge_deps = $(if $(filter rm,$(EVAL_JUDGE)),$(eval_rm_done))

$(EVAL_DIR)/responses.parquet: $(EVAL_PROMPTS) $(foreach d,$(call eval_dirs,$(EVAL_POLICIES)),$(d)/$(call ck_weights,$(if $(filter $(EVAL_SFT),$(d)),$(if $(SFT_IMPORT),,$(SFT_LORA_RANK)),$(PPO_LORA_RANK)))) $(if $(EVAL_SCORE_WITH_RM),$(eval_rm_done)) | $(BIN)/marlhf-eval
	@echo "==> eval: generate"
	$(BIN)/marlhf-eval generate $(addprefix --policy ,$(EVAL_POLICIES)) --out $@ $(eval_generate_args)

$(EVAL_DIR)/judgements.parquet: $(EVAL_DIR)/responses.parquet $(eval_judge_deps) | $(BIN)/marlhf-eval
	@echo "==> eval: judge ($(EVAL_JUDGE))"
	$(BIN)/marlhf-eval judge --responses $< --a $(EVAL_JUDGE_A) $(addprefix --b ,$(EVAL_JUDGE_B)) \
	  --out $@ $(eval_judge_args)

$(EVAL_DIR)/passk.parquet: $(EVAL_DIR)/responses.parquet $(EVAL_PROMPTS) | $(BIN)/marlhf-eval bwrap
	@echo "==> eval: pass@k"
	$(BIN)/marlhf-eval passk --responses $< --prompts $(EVAL_PROMPTS) --k $(EVAL_K) --out $@ \
	  --timeout $(EVAL_PASSK_TIMEOUT) --memory-mb $(EVAL_PASSK_MEMORY_MB)

$(EVAL_DIR)/report.md: $(EVAL_DIR)/responses.parquet $(eval_judged) $(if $(EVAL_SCORE_WITH_RM),$(EVAL_RM)/metrics.parquet) $(call eval_dirs,$(EVAL_PPO_METRICS)) | $(BIN)/marlhf-eval
	@echo "==> eval: report"
	$(BIN)/marlhf-eval report --responses $(EVAL_DIR)/responses.parquet $(eval_judged_args) \
	  $(if $(EVAL_SCORE_WITH_RM),--rm-metrics $(EVAL_RM)/metrics.parquet) \
	  $(addprefix --ppo-metrics ,$(EVAL_PPO_METRICS)) --curve-metric $(EVAL_CURVE_METRIC) \
	  --task $(TASK) --out $@

# The reward model's metrics are written with its checkpoint.
$(EVAL_RM)/metrics.parquet: $(eval_rm_done) ;

PIPELINE_GOALS += $(EVAL_DIR)/report.md

.PHONY: eval serve
## eval: responses, judgements (pass@k for apps) and the report of SFT, PPO and MA-PPO
eval: $(EVAL_DIR)/report.md
	@echo "eval: report in $(EVAL_DIR)/report.md"

SERVE_CHECKPOINT ?= $(EVAL_MAPPO)
SERVE_ADDR ?= 127.0.0.1:8080
SERVE_MAX_NEW ?= $(EVAL_MAX_NEW)
## serve: chat with SERVE_CHECKPOINT through OpenAI's protocol on SERVE_ADDR
serve: | $(BIN)/marlhf-serve
	$(BIN)/marlhf-serve --checkpoint $(SERVE_CHECKPOINT) --task $(TASK) --addr $(SERVE_ADDR) \
	  --max-new-tokens $(SERVE_MAX_NEW) --max-prompt-tokens $(EVAL_MAX_PROMPT) --device $(DEVICE)

.DEFAULT_GOAL := $(eval_default_goal)
