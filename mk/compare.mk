# The comparison: every termination condition of TERMINATIONS trained with
# every seed of SEEDS from the same SFT model and reward model, all final
# and early-stopped policies evaluated on the same prompts, and a report
# with 95% t-intervals over seeds, verdicts with their test and power (no
# verdict below 5 seeds).
#
#   make compare TASK=hh-rlhf                         # 5 seeds: $(RUN)/compare/report.md
#   make compare TASK=stories                         # 10 seeds
#   make compare COMPARE_SEED_COUNT=6                 # one more seed: only its runs are trained
#   make compare TERMINATIONS="fixed:1 fixed:5 parsing:5"
#   make compare PPO_RECIPE=reference                 # the paper's training recipe (its own runs)
#
# Each run is the PPO run of mk/ppo.mk (so the pipeline's own runs, seed
# PPO_SEED, are reused). Per run, and so cached per run: the final
# policy's responses (compare/responses/<run>.parquet); its checkpoints at
# COMPARE_VALIDATION_ITERS answering VALIDATION_N validation prompts
# (compare/validation/<run>.parquet); and the early-stopped policy, the
# checkpoint with the best mean COMPARE_SELECT_BY there, answering the
# evaluation prompts (compare/early/<run>.parquet). Adding a seed or a
# condition trains and samples only what is new; the judgements (each
# condition's policy against the baseline's of the same seed) and the
# report are redone. The baseline is the first condition of TERMINATIONS
# (vanilla PPO, fixed:1, by default).
#
# From the other fragments: ppo_run, ppo_done, ppo_final_actor, ppo_actor,
# ppo_dir, SEEDS and COMPARE_SEED_COUNT (mk/ppo.mk); eval_generate_args,
# eval_sampling_args, eval_judge_args, eval_judge_deps, eval_rm_done,
# EVAL_SCORE_WITH_RM, EVAL_PROMPTS, VALIDATION_PROMPTS, VALIDATION_N
# (mk/eval.mk).

COMPARE_DIR ?= $(RUN)/$(if $(filter-out default,$(PPO_RECIPE)),compare-$(PPO_RECIPE),compare)$(ppo_lora_suffix)$(if $(PPO_TAG),-$(PPO_TAG))
# LoRA runs (PPO_LORA_RANK, their own compare directory): the full
# fine-tuning runs of the same conditions and seeds are drawn beside them
# (COMPARE_FULL= leaves them out), made if missing by make without the LoRA
# settings, and the update's memory and seconds are drawn too.
COMPARE_FULL ?= $(if $(PPO_LORA_RANK),yes)
COMPARE_BASELINE ?= $(firstword $(TERMINATIONS))
# Training metrics drawn with bands; the first is read for iterations to
# parity and the budget table. The optional ones are drawn when every run's
# metrics have them (the critic's diagnostics).
COMPARE_CURVES ?= score_mean kl_k1_token_mean entropy
COMPARE_OPTIONAL_CURVES ?= critic_explained_variance critic_bias advantage_position_corr
COMPARE_TITLE ?= MA-PPO against PPO over seeds ($(TASK), recipe $(PPO_RECIPE))
# Pairwise judging of each condition against the baseline (not for apps,
# which has pass@k instead of a judge).
COMPARE_JUDGE ?= $(if $(filter apps,$(TASK)),,yes)
# A task with a gold reward: the proxy's per-pair scores on held-out pairs.
COMPARE_RM_ACCURACY ?=
# Early stopping: the checkpoints (policies after these iterations; by
# default the ends of the run's four quarters) that answer the validation
# prompts, and what the best is chosen by: score (the reward model's) or
# gold (a task with a gold reward). Not for apps (no reward model).
COMPARE_EARLY_STOP ?= $(if $(filter apps,$(TASK)),,yes)
ifndef COMPARE_VALIDATION_ITERS
COMPARE_VALIDATION_ITERS := $(shell for k in 1 2 3 4; do echo $$(( k * $(ITERS) / 4 )); done | sort -nu | grep -vx 0)
endif
COMPARE_SELECT_BY ?= score

# $(1): condition, $(2): seed. The run's name: its directory's, dot, seed.
cmp_group = $(notdir $(call ppo_dir,$(1)))
cmp_name = $(call cmp_group,$(1)).$(2)
cmp_responses = $(COMPARE_DIR)/responses/$(call cmp_name,$(1),$(2)).parquet
cmp_validation = $(COMPARE_DIR)/validation/$(call cmp_name,$(1),$(2)).parquet
cmp_early = $(COMPARE_DIR)/early/$(call cmp_name,$(1),$(2)).parquet
# The run's candidate checkpoints as NAME=DIR, named as marlhf-eval
# early-stop expects (iter-KKK).
cmp_checkpoints = $(foreach k,$(COMPARE_VALIDATION_ITERS),iter-$(shell printf '%03d' $(k))=$(call ppo_actor,$(1),$(2),$(k)))

define compare_run
$(call cmp_responses,$(1),$(2)): $(call ppo_done,$(1),$(2)) $(EVAL_PROMPTS) $(if $(EVAL_SCORE_WITH_RM),$(eval_rm_done)) | $(BIN)/marlhf-eval
	@echo "==> compare: generate $(call cmp_name,$(1),$(2))"
	$(BIN)/marlhf-eval generate --policy $(call cmp_name,$(1),$(2))=$(call ppo_final_actor,$(1),$(2)) \
	  --out $$@ $$(eval_generate_args)

$(call cmp_validation,$(1),$(2)): $(call ppo_done,$(1),$(2)) $(VALIDATION_PROMPTS) $(if $(EVAL_SCORE_WITH_RM),$(eval_rm_done)) | $(BIN)/marlhf-eval
	@echo "==> compare: validate $(call cmp_name,$(1),$(2))"
	$(BIN)/marlhf-eval generate $(addprefix --policy ,$(call cmp_checkpoints,$(1),$(2))) \
	  --prompts $(VALIDATION_PROMPTS) --n $$(VALIDATION_N) --out $$@ $$(eval_sampling_args)

$(call cmp_early,$(1),$(2)): $(call cmp_validation,$(1),$(2)) $(EVAL_PROMPTS) | $(BIN)/marlhf-eval
	@echo "==> compare: early-stop $(call cmp_name,$(1),$(2))"
	$(BIN)/marlhf-eval early-stop --validation $$< $(addprefix --candidate ,$(call cmp_checkpoints,$(1),$(2))) \
	  --select-by $$(COMPARE_SELECT_BY) --name $(call cmp_name,$(1),$(2)) --out $$@ $$(eval_generate_args)
endef
$(foreach t,$(TERMINATIONS),$(foreach s,$(SEEDS),$(eval $(call compare_run,$(t),$(s)))))

compare_responses := $(foreach t,$(TERMINATIONS),$(foreach s,$(SEEDS),$(call cmp_responses,$(t),$(s))))
cmp_label = $(t)$(if $(PPO_LORA_RANK), LoRA r$(PPO_LORA_RANK))
compare_curves = $(COMPARE_CURVES) $(if $(PPO_LORA_RANK),update_peak_rss_mb actor_seconds critic_seconds)
ifneq ($(and $(COMPARE_FULL),$(PPO_LORA_RANK)),)
# $(1): condition. The full fine-tuning run's group, and its responses in
# the full comparison's directory.
cmp_full_group = $(subst $(ppo_lora_suffix),,$(call cmp_group,$(1)))
cmp_full_dir = $(subst $(ppo_lora_suffix),,$(COMPARE_DIR))
cmp_full_responses = $(cmp_full_dir)/responses/$(call cmp_full_group,$(1)).$(2).parquet
# With early stopping every run of the report needs its validation and
# early-stopped responses, the full fine-tune's too.
cmp_full_validation = $(cmp_full_dir)/validation/$(call cmp_full_group,$(1)).$(2).parquet
cmp_full_early = $(cmp_full_dir)/early/$(call cmp_full_group,$(1)).$(2).parquet
compare_full := $(foreach t,$(TERMINATIONS),$(foreach s,$(SEEDS),$(call cmp_full_responses,$(t),$(s)) \
  $(if $(COMPARE_EARLY_STOP),$(call cmp_full_validation,$(t),$(s)) $(call cmp_full_early,$(t),$(s)))))
$(compare_full): | $(BIN)/marlhf-eval
	@echo "==> compare: the full fine-tuning run beside the LoRA runs"
	$(MAKE) --no-print-directory PPO_LORA_RANK= PPO_LORA_ALPHA= PPO_LORA_TARGETS= PPO_LORA_DROPOUT= PPO_USE_RSLORA= $@
compare_full_args = $(foreach t,$(TERMINATIONS),$(foreach s,$(SEEDS),--run $(call cmp_full_group,$(t)).$(s)=$(RUN)/$(call cmp_full_group,$(t))/seed-$(s) \
    --responses $(call cmp_full_responses,$(t),$(s)) \
    $(if $(COMPARE_EARLY_STOP),--validation $(call cmp_full_group,$(t)).$(s)=$(call cmp_full_validation,$(t),$(s)) \
      --early-responses $(call cmp_full_early,$(t),$(s)))) \
  --label '$(call cmp_full_group,$(t))=$(t) full')
endif
compare_pairs := $(foreach t,$(filter-out $(COMPARE_BASELINE),$(TERMINATIONS)),\
  $(foreach s,$(SEEDS),$(call cmp_name,$(t),$(s)):$(call cmp_name,$(COMPARE_BASELINE),$(s))))
compare_judged := $(if $(and $(COMPARE_JUDGE),$(compare_pairs)),$(COMPARE_DIR)/judgements.parquet)
compare_validated := $(if $(COMPARE_EARLY_STOP),$(foreach t,$(TERMINATIONS),$(foreach s,$(SEEDS),$(call cmp_validation,$(t),$(s)))))
compare_early := $(if $(COMPARE_EARLY_STOP),$(foreach t,$(TERMINATIONS),$(foreach s,$(SEEDS),$(call cmp_early,$(t),$(s)))))

$(COMPARE_DIR)/judgements.parquet: $(compare_responses) $(eval_judge_deps) | $(BIN)/marlhf-eval
	@echo "==> compare: judge ($(EVAL_JUDGE))"
	$(BIN)/marlhf-eval judge $(addprefix --responses ,$(compare_responses)) \
	  $(addprefix --pair ,$(compare_pairs)) --out $@ $(eval_judge_args)

$(COMPARE_DIR)/report.md: $(compare_responses) $(compare_early) $(compare_full) $(compare_judged) $(COMPARE_RM_ACCURACY) | $(BIN)/marlhf-eval
	@echo "==> compare: report"
	$(BIN)/marlhf-eval compare \
	  $(foreach t,$(TERMINATIONS),$(foreach s,$(SEEDS),--run $(call cmp_name,$(t),$(s))=$(call ppo_run,$(t),$(s)))) \
	  $(foreach t,$(TERMINATIONS),--label '$(call cmp_group,$(t))=$(cmp_label)') --baseline $(call cmp_group,$(COMPARE_BASELINE)) \
	  $(addprefix --responses ,$(compare_responses)) $(addprefix --judgements ,$(compare_judged)) $(compare_full_args) \
	  $(if $(COMPARE_EARLY_STOP),$(foreach t,$(TERMINATIONS),$(foreach s,$(SEEDS),--validation $(call cmp_name,$(t),$(s))=$(call cmp_validation,$(t),$(s)))) \
	    $(addprefix --early-responses ,$(compare_early)) --select-by $(COMPARE_SELECT_BY)) \
	  $(addprefix --rm-accuracy ,$(COMPARE_RM_ACCURACY)) \
	  $(addprefix --curve ,$(compare_curves)) $(addprefix --curve-if-present ,$(COMPARE_OPTIONAL_CURVES)) \
	  --task $(TASK) --title "$(COMPARE_TITLE)" \
	  --note "PPO: $(ITERS) iterations of $(PPO_ROLLOUT_BATCH) rollouts, recipe $(PPO_RECIPE), preset $(PRESET)$(if $(PPO_LORA_RANK),; LoRA rank $(PPO_LORA_RANK)$(if $(PPO_LORA_ALPHA), alpha $(PPO_LORA_ALPHA))$(if $(PPO_LORA_TARGETS), on $(PPO_LORA_TARGETS))$(if $(filter-out 0 false no,$(PPO_USE_RSLORA)), rsLoRA)$(if $(PPO_LORA_DROPOUT), dropout $(PPO_LORA_DROPOUT)))" \
	  $(if $(COMPARE_EARLY_STOP),--note "early stopping: checkpoints after iterations $(COMPARE_VALIDATION_ITERS) on $(VALIDATION_N) validation prompts") \
	  --out $@

.PHONY: compare-validation
## compare-validation: only the validation responses of every run (what tuning ranks)
compare-validation: $(compare_validated)

.PHONY: compare
## compare: TERMINATIONS × SEEDS from one SFT and reward model, with confidence intervals
compare: $(COMPARE_DIR)/report.md
	@awk '/^## / { show = ($$0 == "## Verdict") } show' $<
	@echo "report: $< (plots beside it)"
