# LoRA's make helpers (README, "LoRA adapters"): a stage whose
# <STAGE>_LORA_RANK is set (SFT, RM, PPO) trains a PEFT adapter on its
# frozen input model instead of every weight; <STAGE>_LORA_ALPHA,
# _LORA_TARGETS (PEFT module names, comma separated), _LORA_DROPOUT and
# _USE_RSLORA=1 refine it (empty: the binaries' defaults). Such a stage
# writes an adapter directory, which adapter_model.safetensors marks as
# complete instead of model.safetensors.

comma := ,
# $(1): SFT, RM or PPO. That stage's LoRA flags (nothing without a rank).
lora_flags = $(if $($(1)_LORA_RANK),--lora-rank $($(1)_LORA_RANK) \
  $(if $($(1)_LORA_ALPHA),--lora-alpha $($(1)_LORA_ALPHA)) \
  $(if $($(1)_LORA_TARGETS),--lora-targets $($(1)_LORA_TARGETS)) \
  $(if $($(1)_LORA_DROPOUT),--lora-dropout $($(1)_LORA_DROPOUT)) \
  $(if $(filter-out 0 false no,$($(1)_USE_RSLORA)),--use-rslora))
# $(1): a <STAGE>_LORA_RANK value. The file a finished checkpoint has.
ck_weights = $(if $(strip $(1)),adapter_model,model).safetensors
