# MA-PPO iterations: rollout → segment → update, one directory per iteration.
#
#   make ppo TASK=hh-rlhf ITERS=4 NGRAM=5   # $(RUN)/ppo-n5/iter-000 … iter-004
#   make ppo TASK=hh-rlhf ITERS=4 NGRAM=1   # vanilla token-level PPO in ppo-n1
#   make ppo TERMINATION=parsing:5          # other conditions: ppo-parsing-5
#   make ppo-metrics                        # the metrics table, one row per iteration
#
# Iteration K reads iter-K/{actor,critic} (the SFT model and the reward model
# for K = 0) and writes iter-K/rollouts.parquet, iter-K/segments.parquet,
# iter-K/advantages.parquet and iter-(K+1)/{actor,critic}, plus its row of
# ppo-*/metrics.parquet. Every file is written atomically and
# advantages.parquet last, so each step is a make target cached by its file:
# after an interruption anywhere, `make ppo` redoes only what is missing.
# The stage binaries are order-only prerequisites, so rebuilding them does
# not throw finished iterations away (delete an iteration's files to redo it).
#
# For the including Makefile: RUN, BIN, DEVICE and a `$(BIN)/marlhf-%` rule
# come from it; everything below is a `?=` default a task or preset may set
# first. `make pipeline` gets both PPO_PIPELINE_TERMINATIONS runs (vanilla
# and MA-PPO) through PIPELINE_GOALS. For the evaluation:
#   $(call ppo_final_actor,fixed:5)  the policy after ITERS iterations
#   $(call ppo_done,fixed:5)         the file that exists once it does

NGRAM ?= 5
ITERS ?= 4
TERMINATION ?= fixed:$(NGRAM)
PPO_PIPELINE_TERMINATIONS ?= fixed:1 fixed:5

PPO_PROMPTS ?= $(RUN)/data/prompts.parquet
PPO_SFT ?= $(RUN)/sft
PPO_RM ?= $(RUN)/rm
# Files whose presence means the SFT and reward-model checkpoints are
# complete (a checkpoint directory appears all at once).
PPO_SFT_DONE ?= $(PPO_SFT)/model.safetensors
PPO_RM_DONE ?= $(PPO_RM)/model.safetensors

DEVICE ?= cpu
PPO_SEED ?= $(or $(SEED),1234)
# rollout; prompt + response must fit the SFT model's positions
PPO_ROLLOUT_BATCH ?= 64
PPO_BATCH ?= 8
PPO_MAX_PROMPT ?= $(or $(MAX_PROMPT_TOKENS),512)
PPO_MAX_NEW ?= $(or $(MAX_COMPLETION_TOKENS),512)
PPO_TEMPERATURE ?= 0.8
PPO_TOP_K ?= 50
PPO_TOP_P ?= 1.0
# update (the paper's values)
PPO_VALUE_FUNCTION ?= equal
PPO_KL ?= 0.05
PPO_CLIP_REWARD ?= 2.5
PPO_GAMMA ?= 1
PPO_LAMBDA ?= 0.95
PPO_CLIP ?= 0.2
PPO_VALUE_CLIP ?= 0.2
PPO_EPOCHS ?= 1
PPO_MINI_BATCH ?= 8
PPO_ACTOR_LR ?= 1.5e-5
PPO_CRITIC_LR ?= 1.5e-5
PPO_MAX_GRAD_NORM ?= 1.0
# Extra flags per stage, e.g. PPO_UPDATE_ARGS="--weight-decay 0.01".
PPO_ROLLOUT_ARGS ?=
PPO_SEGMENT_ARGS ?=
PPO_UPDATE_ARGS ?=

# $(1): a termination condition. Its directory: ppo-n5 for fixed:5,
# ppo-parsing-5 for parsing:5, ppo-ppl for ppl.
ppo_dir = $(RUN)/ppo-$(if $(filter fixed:%,$(1)),n$(patsubst fixed:%,%,$(1)),$(subst :,-,$(1)))
# $(1): condition, $(2): iteration K.
ppo_iter = $(call ppo_dir,$(1))/iter-$(shell printf '%03d' $(2))
ppo_actor = $(if $(filter 0,$(2)),$(PPO_SFT),$(call ppo_iter,$(1),$(2))/actor)
ppo_critic = $(if $(filter 0,$(2)),$(PPO_RM),$(call ppo_iter,$(1),$(2))/critic)
ppo_final_actor = $(call ppo_actor,$(1),$(ITERS))
# The policy a run ends with: iteration ITERS − 1's update writes it (and
# the critic) together with that iteration's advantages.parquet.
ppo_done = $(call ppo_iter,$(1),$(ITERS))/actor/model.safetensors
# What iteration K (≥ 1) starts from: the checkpoints iteration K − 1 wrote.
ppo_inputs = $(call ppo_iter,$(1),$(2))/actor/model.safetensors $(call ppo_iter,$(1),$(2))/critic/model.safetensors

PPO_DIR := $(call ppo_dir,$(TERMINATION))

# $(1): condition, $(2): K, $(3): K − 1, $(4): K + 1. What must exist before
# iteration K starts is its actor and critic: the SFT and reward models, or
# iteration K − 1's last output. Hyper-parameters are read when the recipe
# runs ($$), so command-line overrides always apply.
define ppo_iteration
$(call ppo_iter,$(1),$(2))/rollouts.parquet: $(if $(filter 0,$(2)),$(PPO_SFT_DONE) $(PPO_RM_DONE),$(call ppo_inputs,$(1),$(2))) $(PPO_PROMPTS) | $(BIN)/marlhf-rollout
	@echo "==> ppo $(1): iteration $(2) rollout"
	$(BIN)/marlhf-rollout --prompts $(PPO_PROMPTS) \
	  --actor $(call ppo_actor,$(1),$(2)) --reference $(PPO_SFT) \
	  --critic $(call ppo_critic,$(1),$(2)) --reward-model $(PPO_RM) \
	  --out $$@ --iteration $(2) --rollout-batch $$(PPO_ROLLOUT_BATCH) --batch-size $$(PPO_BATCH) \
	  --max-prompt-tokens $$(PPO_MAX_PROMPT) --max-new-tokens $$(PPO_MAX_NEW) \
	  --temperature $$(PPO_TEMPERATURE) --top-k $$(PPO_TOP_K) --top-p $$(PPO_TOP_P) \
	  --seed $$(PPO_SEED) --device $$(DEVICE) $$(PPO_ROLLOUT_ARGS)

$(call ppo_iter,$(1),$(2))/segments.parquet: $(call ppo_iter,$(1),$(2))/rollouts.parquet | $(BIN)/marlhf-segment
	@echo "==> ppo $(1): iteration $(2) segment"
	$(BIN)/marlhf-segment --rollouts $$< --out $$@ --termination $(1) \
	  --seed $$(PPO_SEED) --tokenizer $(call ppo_actor,$(1),$(2)) $$(PPO_SEGMENT_ARGS)

# One update writes three things, a grouped target: deleting the next
# iteration's directory (its actor and critic) reruns this update.
$(call ppo_iter,$(1),$(2))/advantages.parquet $(call ppo_inputs,$(1),$(4)) &: $(call ppo_iter,$(1),$(2))/rollouts.parquet $(call ppo_iter,$(1),$(2))/segments.parquet | $(BIN)/marlhf-update
	@echo "==> ppo $(1): iteration $(2) update"
	$(BIN)/marlhf-update --rollouts $(call ppo_iter,$(1),$(2))/rollouts.parquet \
	  --segments $(call ppo_iter,$(1),$(2))/segments.parquet \
	  --actor $(call ppo_actor,$(1),$(2)) --critic $(call ppo_critic,$(1),$(2)) \
	  --out-actor $(call ppo_iter,$(1),$(4))/actor --out-critic $(call ppo_iter,$(1),$(4))/critic \
	  --advantages $(call ppo_iter,$(1),$(2))/advantages.parquet --metrics $(call ppo_dir,$(1))/metrics.parquet \
	  --value-function $$(PPO_VALUE_FUNCTION) --kl-coef $$(PPO_KL) --clip-reward $$(PPO_CLIP_REWARD) \
	  --gamma $$(PPO_GAMMA) --lambda $$(PPO_LAMBDA) --clip $$(PPO_CLIP) --value-clip $$(PPO_VALUE_CLIP) \
	  --ppo-epochs $$(PPO_EPOCHS) --mini-batch $$(PPO_MINI_BATCH) \
	  --actor-lr $$(PPO_ACTOR_LR) --critic-lr $$(PPO_CRITIC_LR) --max-grad-norm $$(PPO_MAX_GRAD_NORM) \
	  --seed $$(PPO_SEED) --device $$(DEVICE) $$(PPO_UPDATE_ARGS)
endef

# Rules for iterations 0 … ITERS−1 of every condition asked for, without
# taking over the default goal of the Makefile that includes this one.
ppo_default_goal := $(.DEFAULT_GOAL)
ppo_iterations := $(shell seq 0 $$(( $(ITERS) - 1 )))
$(foreach t,$(sort $(TERMINATION) $(PPO_PIPELINE_TERMINATIONS)),\
  $(foreach k,$(ppo_iterations),\
    $(eval $(call ppo_iteration,$(t),$(k),$(shell expr $(k) - 1),$(shell expr $(k) + 1)))))

PIPELINE_GOALS += $(if $(ppo_iterations),$(foreach t,$(PPO_PIPELINE_TERMINATIONS),$(call ppo_done,$(t))))

.PHONY: ppo ppo-metrics
ppo: $(if $(ppo_iterations),$(call ppo_done,$(TERMINATION)))
	@echo "==> ppo $(TERMINATION): $(ITERS) iteration(s) in $(PPO_DIR); policy $(call ppo_final_actor,$(TERMINATION))"

ppo-metrics: ppo | $(BIN)/marlhf-inspect
	$(BIN)/marlhf-inspect $(PPO_DIR)/metrics.parquet --rows 1000

.DEFAULT_GOAL := $(ppo_default_goal)
