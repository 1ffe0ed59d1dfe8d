# PRESET=tiny (the default): sized so `make pipeline` finishes in well under
# 20 minutes on a 2-core CPU. A small Llama trained from scratch.
VOCAB_SIZE ?= 4096
MODEL_HIDDEN ?= 128
MODEL_LAYERS ?= 2
MODEL_HEADS ?= 4
MODEL_MLP ?= 344
MAX_PROMPT_TOKENS ?= 128
MAX_COMPLETION_TOKENS ?= 48
SFT_EPOCHS ?= 3
SFT_BATCH ?= 16
RM_EPOCHS ?= 2
RM_BATCH ?= 8
PPO_MAX_PROMPT ?= $(MAX_PROMPT_TOKENS)
PPO_MAX_NEW ?= $(MAX_COMPLETION_TOKENS)
# PPO: a model trained from scratch moves little at the paper's 1.5e-5.
ITERS ?= 16
PPO_ROLLOUT_BATCH ?= 128
PPO_ACTOR_LR ?= 1e-4
PPO_CRITIC_LR ?= 1e-4
