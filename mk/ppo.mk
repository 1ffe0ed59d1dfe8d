# MA-PPO iterations: rollout → segment → update, one directory per iteration.
#
#   make ppo TASK=hh-rlhf ITERS=4 NGRAM=5   # $(RUN)/ppo-n5/seed-1234/iter-000 … iter-004
#   make ppo TASK=hh-rlhf ITERS=4 NGRAM=1   # vanilla token-level PPO in ppo-n1
#   make ppo TERMINATION=parsing:5          # other conditions: ppo-parsing-5
#   make ppo PPO_SEED=7                     # another seed: ppo-n5/seed-7
#   make ppo PPO_RECIPE=reference           # the paper's training recipe: ppo-n5-reference
#   make ppo-metrics                        # the metrics table, one row per iteration
#
# A run is one termination condition, one recipe and one seed, in
# $(RUN)/ppo-<condition>[-<recipe>][-<PPO_TAG>]/seed-<seed>/. Iteration K
# reads iter-K/{actor,critic} (the SFT model and the reward model for
# K = 0) and writes iter-K/rollouts.parquet, iter-K/segments.parquet,
# iter-K/advantages.parquet and iter-(K+1)/{actor,critic}, plus its row of
# the run's metrics.parquet. Every file is written atomically and
# advantages.parquet last, so each step is a make target cached by its file:
# after an interruption anywhere, `make ppo` redoes only what is missing.
# The stage binaries are order-only prerequisites, so rebuilding them does
# not throw finished iterations away (delete an iteration's files to redo it).
#
# Hyper-parameters: the binaries' own defaults (`marlhf-rollout --help`,
# `marlhf-update --help`) unless a variable below is set; PPO_RECIPE picks
# the update's recipe (default or reference) and every PPO_* set on top
# overrides one of its values. A variable set for a run that already exists
# does not redo it: use PPO_TAG (or NAME) for a run with other settings.
#
# For the including Makefile: RUN, BIN, DEVICE and a `$(BIN)/marlhf-%` rule
# come from it; everything below is a `?=` default a task or preset may set
# first. `make pipeline` gets both PPO_PIPELINE_TERMINATIONS runs (vanilla
# and MA-PPO) of seed PPO_SEED through PIPELINE_GOALS. For the evaluation
# and the comparison:
#   $(call ppo_final_actor,fixed:5,SEED)  the policy after ITERS iterations
#   $(call ppo_done,fixed:5,SEED)         the file that exists once it does
#   $(call ppo_run,fixed:5,SEED)          the run's directory

# The LoRA helpers (lora_flags, ck_weights), unless the includer has them.
ifndef ck_weights
include $(dir $(lastword $(MAKEFILE_LIST)))lora.mk
endif

NGRAM ?= 5
ITERS ?= 4
TERMINATION ?= fixed:$(NGRAM)
PPO_PIPELINE_TERMINATIONS ?= fixed:1 fixed:5
PPO_RECIPE ?= default
PPO_TAG ?=

PPO_PROMPTS ?= $(RUN)/data/prompts.parquet
PPO_SFT ?= $(RUN)/sft
PPO_RM ?= $(RUN)/rm
# Files whose presence means the SFT and reward-model checkpoints are
# complete (a checkpoint directory appears all at once; an adapter's file
# when the stage trained a LoRA adapter).
PPO_SFT_DONE ?= $(PPO_SFT)/$(call ck_weights,$(if $(SFT_IMPORT),,$(SFT_LORA_RANK)))
PPO_RM_DONE ?= $(PPO_RM)/$(call ck_weights,$(RM_LORA_RANK))
# LoRA for the actor and the critic (`marlhf-update --lora-rank`, the
# critic's value head trained with its adapter): each iteration's actor and
# critic are then PEFT adapters on the SFT model and the reward model, and
# rollout takes the reference as the actor's base with its adapter off
# instead of loading it again. The settings are part of the run's name
# (ppo-n5-lora16, ppo-n5-lora16a32rs-q+v), so LoRA runs never mix with full
# fine-tuning runs.
PPO_LORA_RANK ?=
PPO_LORA_ALPHA ?=
PPO_LORA_TARGETS ?=
PPO_LORA_DROPOUT ?=
PPO_USE_RSLORA ?=
ppo_lora_suffix = $(if $(PPO_LORA_RANK),-lora$(PPO_LORA_RANK)$(if $(PPO_LORA_ALPHA),a$(PPO_LORA_ALPHA))$(if $(filter-out 0 false no,$(PPO_USE_RSLORA)),rs)$(if $(PPO_LORA_DROPOUT),d$(PPO_LORA_DROPOUT))$(if $(PPO_LORA_TARGETS),-$(subst $(comma),+,$(subst _proj,,$(PPO_LORA_TARGETS)))))
# What a finished iteration's actor and critic directories hold.
ppo_weights = $(call ck_weights,$(PPO_LORA_RANK))

DEVICE ?= cpu
PPO_SEED ?= $(or $(SEED),1234)
# `make compare` (mk/compare.mk): every condition of TERMINATIONS with
# every seed of SEEDS, the pipeline's own runs among them: by default
# COMPARE_SEED_COUNT consecutive seeds from PPO_SEED (the report gives no
# verdict below 5; a task may set more).
TERMINATIONS ?= fixed:1 fixed:5
COMPARE_SEED_COUNT ?= 5
SEEDS ?= $(shell seq $(PPO_SEED) $$(( $(PPO_SEED) + $(COMPARE_SEED_COUNT) - 1 )))
# rollout: prompts per iteration, sequences per batch; prompt + response
# must fit the SFT model's positions.
PPO_ROLLOUT_BATCH ?= 64
# PPO_BATCH empty: marlhf-rollout's default, 8 on the CPU, 64 on a GPU.
PPO_BATCH ?=
PPO_MAX_PROMPT ?= $(or $(MAX_PROMPT_TOKENS),512)
PPO_MAX_NEW ?= $(or $(MAX_COMPLETION_TOKENS),512)
# Sampling (empty: marlhf-rollout's defaults). PPO_LOGPROB_TEMPERATURE=1
# scores at temperature 1 as the paper's released code does.
PPO_TEMPERATURE ?=
PPO_TOP_K ?=
PPO_TOP_P ?=
PPO_LOGPROB_TEMPERATURE ?=
# shuffled (each pass over the prompts in an order drawn from the seed) or
# file (the file's order for every seed).
PPO_PROMPT_ORDER ?=
# A task with a known reward (stories) scores every rollout with it too.
GOLD_MODEL ?=
# update (empty: the recipe's value, see `marlhf-update --help`)
PPO_VALUE_FUNCTION ?=
PPO_KL ?=
PPO_KL_ESTIMATOR ?=
PPO_CLIP_REWARD ?=
PPO_GAMMA ?=
PPO_LAMBDA ?=
# MA-PPO's credit assignment (DESIGN.md, "MA-PPO's slow start"):
# PPO_MACRO_LAMBDA per-macro|per-token, PPO_MACRO_KL mean|sum, and
# PPO_CRITIC_WARMUP iterations in which only the critic trains.
PPO_MACRO_LAMBDA ?=
PPO_MACRO_KL ?=
PPO_CRITIC_WARMUP ?=
PPO_CLIP ?=
PPO_VALUE_CLIP ?=
PPO_EPOCHS ?=
PPO_MINI_BATCH ?=
PPO_MICRO_BATCH ?=
PPO_LOSS_AGG ?=
PPO_ACTOR_LR ?=
PPO_CRITIC_LR ?=
PPO_WEIGHT_DECAY ?=
PPO_MAX_GRAD_NORM ?=
PPO_LR_SCHEDULE ?=
PPO_WARMUP_RATIO ?=
PPO_MIN_RESPONSE ?=
PPO_WHITEN ?=
# Extra flags per stage, e.g. PPO_UPDATE_ARGS="--weight-decay 0.01".
PPO_ROLLOUT_ARGS ?=
PPO_SEGMENT_ARGS ?=
PPO_UPDATE_ARGS ?=

# `--flag value` when the variable is set, nothing otherwise.
ppo_opt = $(if $(strip $(2)),$(1) $(strip $(2)))

# $(1): a termination condition. Its runs' parent: ppo-n5 for fixed:5,
# ppo-parsing-5 for parsing:5, ppo-ppl for ppl; then -<recipe> unless it is
# the default one, the LoRA settings when set, and -<PPO_TAG> when set.
ppo_dir = $(RUN)/ppo-$(if $(filter fixed:%,$(1)),n$(patsubst fixed:%,%,$(1)),$(subst :,-,$(1)))$(if $(filter-out default,$(PPO_RECIPE)),-$(PPO_RECIPE))$(ppo_lora_suffix)$(if $(PPO_TAG),-$(PPO_TAG))
# $(1): condition, $(2): seed.
ppo_run = $(call ppo_dir,$(1))/seed-$(2)
# $(1): condition, $(2): seed, $(3): iteration K.
ppo_iter = $(call ppo_run,$(1),$(2))/iter-$(shell printf '%03d' $(3))
ppo_actor = $(if $(filter 0,$(3)),$(PPO_SFT),$(call ppo_iter,$(1),$(2),$(3))/actor)
ppo_critic = $(if $(filter 0,$(3)),$(PPO_RM),$(call ppo_iter,$(1),$(2),$(3))/critic)
ppo_final_actor = $(call ppo_actor,$(1),$(2),$(ITERS))
# The policy a run ends with: iteration ITERS − 1's update writes it (and
# the critic) together with that iteration's advantages.parquet.
ppo_done = $(call ppo_iter,$(1),$(2),$(ITERS))/actor/$(ppo_weights)
# What iteration K (≥ 1) starts from: the checkpoints iteration K − 1 wrote.
ppo_inputs = $(call ppo_iter,$(1),$(2),$(3))/actor/$(ppo_weights) $(call ppo_iter,$(1),$(2),$(3))/critic/$(ppo_weights)

PPO_DIR := $(call ppo_run,$(TERMINATION),$(PPO_SEED))

# $(1): condition, $(2): seed, $(3): K, $(4): K + 1. What must exist
# before iteration K starts is its actor and critic: the SFT and reward
# models, or iteration K − 1's last output. Hyper-parameters are read when
# the recipe runs ($$), so command-line overrides always apply.
define ppo_iteration
$(call ppo_iter,$(1),$(2),$(3))/rollouts.parquet: $(if $(filter 0,$(3)),$(PPO_SFT_DONE) $(PPO_RM_DONE),$(call ppo_inputs,$(1),$(2),$(3))) $(PPO_PROMPTS) | $(BIN)/marlhf-rollout
	@echo "==> ppo $(1) seed $(2): iteration $(3) rollout"
	$(BIN)/marlhf-rollout --prompts $(PPO_PROMPTS) \
	  --actor $(call ppo_actor,$(1),$(2),$(3)) --reference $(PPO_SFT) \
	  --critic $(call ppo_critic,$(1),$(2),$(3)) --reward-model $(PPO_RM) \
	  --out $$@ --iteration $(3) --rollout-batch $$(PPO_ROLLOUT_BATCH) $$(call ppo_opt,--batch-size,$$(PPO_BATCH)) \
	  --max-prompt-tokens $$(PPO_MAX_PROMPT) --max-new-tokens $$(PPO_MAX_NEW) \
	  $$(call ppo_opt,--temperature,$$(PPO_TEMPERATURE)) $$(call ppo_opt,--top-k,$$(PPO_TOP_K)) \
	  $$(call ppo_opt,--top-p,$$(PPO_TOP_P)) $$(call ppo_opt,--logprob-temperature,$$(PPO_LOGPROB_TEMPERATURE)) \
	  $$(call ppo_opt,--gold-model,$$(GOLD_MODEL)) $$(call ppo_opt,--prompt-order,$$(PPO_PROMPT_ORDER)) \
	  --seed $(2) --device $$(DEVICE) $$(PPO_ROLLOUT_ARGS)

$(call ppo_iter,$(1),$(2),$(3))/segments.parquet: $(call ppo_iter,$(1),$(2),$(3))/rollouts.parquet | $(BIN)/marlhf-segment
	@echo "==> ppo $(1) seed $(2): iteration $(3) segment"
	$(BIN)/marlhf-segment --rollouts $$< --out $$@ --termination $(1) \
	  --seed $(2) --tokenizer $(call ppo_actor,$(1),$(2),$(3)) $$(PPO_SEGMENT_ARGS)

# One update writes three things, a grouped target: deleting the next
# iteration's directory (its actor and critic) reruns this update.
$(call ppo_iter,$(1),$(2),$(3))/advantages.parquet $(call ppo_inputs,$(1),$(2),$(4)) &: $(call ppo_iter,$(1),$(2),$(3))/rollouts.parquet $(call ppo_iter,$(1),$(2),$(3))/segments.parquet | $(BIN)/marlhf-update
	@echo "==> ppo $(1) seed $(2): iteration $(3) update"
	$(BIN)/marlhf-update --rollouts $(call ppo_iter,$(1),$(2),$(3))/rollouts.parquet \
	  --segments $(call ppo_iter,$(1),$(2),$(3))/segments.parquet \
	  --actor $(call ppo_actor,$(1),$(2),$(3)) --critic $(call ppo_critic,$(1),$(2),$(3)) \
	  --out-actor $(call ppo_iter,$(1),$(2),$(4))/actor --out-critic $(call ppo_iter,$(1),$(2),$(4))/critic \
	  --advantages $(call ppo_iter,$(1),$(2),$(3))/advantages.parquet --metrics $(call ppo_run,$(1),$(2))/metrics.parquet \
	  --recipe $$(PPO_RECIPE) --total-iterations $$(ITERS) \
	  $$(call ppo_opt,--value-function,$$(PPO_VALUE_FUNCTION)) $$(call ppo_opt,--kl-coef,$$(PPO_KL)) \
	  $$(call ppo_opt,--kl-estimator,$$(PPO_KL_ESTIMATOR)) $$(call ppo_opt,--clip-reward,$$(PPO_CLIP_REWARD)) \
	  $$(call ppo_opt,--gamma,$$(PPO_GAMMA)) $$(call ppo_opt,--lambda,$$(PPO_LAMBDA)) \
	  $$(call ppo_opt,--macro-lambda,$$(PPO_MACRO_LAMBDA)) $$(call ppo_opt,--macro-kl,$$(PPO_MACRO_KL)) \
	  $$(call ppo_opt,--critic-warmup,$$(PPO_CRITIC_WARMUP)) \
	  $$(call ppo_opt,--clip,$$(PPO_CLIP)) $$(call ppo_opt,--value-clip,$$(PPO_VALUE_CLIP)) \
	  $$(call ppo_opt,--ppo-epochs,$$(PPO_EPOCHS)) $$(call ppo_opt,--mini-batch,$$(PPO_MINI_BATCH)) \
	  $$(call ppo_opt,--micro-batch,$$(PPO_MICRO_BATCH)) $$(call ppo_opt,--loss-agg,$$(PPO_LOSS_AGG)) \
	  $$(call ppo_opt,--actor-lr,$$(PPO_ACTOR_LR)) $$(call ppo_opt,--critic-lr,$$(PPO_CRITIC_LR)) \
	  $$(call ppo_opt,--weight-decay,$$(PPO_WEIGHT_DECAY)) $$(call ppo_opt,--max-grad-norm,$$(PPO_MAX_GRAD_NORM)) \
	  $$(call ppo_opt,--lr-schedule,$$(PPO_LR_SCHEDULE)) $$(call ppo_opt,--warmup-ratio,$$(PPO_WARMUP_RATIO)) \
	  $$(call ppo_opt,--min-response-tokens,$$(PPO_MIN_RESPONSE)) $$(call ppo_opt,--whiten-advantages,$$(PPO_WHITEN)) \
	  --seed $(2) --device $$(DEVICE) $$(call lora_flags,PPO) $$(PPO_UPDATE_ARGS)
endef

# Rules for iterations 0 … ITERS−1 of every condition and seed asked for,
# without taking over the default goal of the Makefile that includes this
# one.
ppo_default_goal := $(.DEFAULT_GOAL)
ppo_iterations := $(shell seq 0 $$(( $(ITERS) - 1 )))
$(foreach t,$(sort $(TERMINATION) $(PPO_PIPELINE_TERMINATIONS) $(TERMINATIONS)),\
  $(foreach s,$(sort $(PPO_SEED) $(SEEDS)),\
    $(foreach k,$(ppo_iterations),\
      $(eval $(call ppo_iteration,$(t),$(s),$(k),$(shell expr $(k) + 1))))))

# Settings of one condition (a tuning budget may pick different ones for
# PPO and MA-PPO): PPO_SETTINGS_<condition, ':' as '-'> holds VAR=value
# words applied to that condition's iterations only, as target-specific
# variables, e.g. PPO_SETTINGS_fixed-5 = PPO_KL=0.05 PPO_ACTOR_LR=3e-4.
# The command line still overrides them (make's rule for variables).
ppo_settings = $(PPO_SETTINGS_$(subst :,-,$(1)))
$(foreach t,$(sort $(TERMINATION) $(PPO_PIPELINE_TERMINATIONS) $(TERMINATIONS)),\
  $(if $(call ppo_settings,$(t)),\
    $(foreach s,$(sort $(PPO_SEED) $(SEEDS)),\
      $(foreach k,$(ppo_iterations),\
        $(foreach v,$(call ppo_settings,$(t)),\
          $(eval $(call ppo_iter,$(t),$(s),$(k))/rollouts.parquet $(call ppo_iter,$(t),$(s),$(k))/segments.parquet \
            $(call ppo_iter,$(t),$(s),$(k))/advantages.parquet $(call ppo_inputs,$(t),$(s),$(shell expr $(k) + 1)): $(v)))))))

PIPELINE_GOALS += $(if $(ppo_iterations),$(foreach t,$(PPO_PIPELINE_TERMINATIONS),$(call ppo_done,$(t),$(PPO_SEED))))

.PHONY: ppo ppo-metrics
ppo: $(if $(ppo_iterations),$(call ppo_done,$(TERMINATION),$(PPO_SEED)))
	@echo "==> ppo $(TERMINATION) seed $(PPO_SEED): $(ITERS) iteration(s) in $(PPO_DIR); policy $(call ppo_final_actor,$(TERMINATION),$(PPO_SEED))"

ppo-metrics: ppo | $(BIN)/marlhf-inspect
	$(BIN)/marlhf-inspect $(PPO_DIR)/metrics.parquet --rows 1000

.DEFAULT_GOAL := $(ppo_default_goal)
