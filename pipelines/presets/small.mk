# PRESET=small: the benchmark configuration (hidden 256, 4 layers, 8 heads,
# vocab 8192, MLP 688), longer sequences and more PPO, for users with more
# time (see the README for its measured wall time).
VOCAB_SIZE ?= 8192
MODEL_HIDDEN ?= 256
MODEL_LAYERS ?= 4
MODEL_HEADS ?= 8
MODEL_MLP ?= 688
MAX_PROMPT_TOKENS ?= 192
MAX_COMPLETION_TOKENS ?= 64
SFT_EPOCHS ?= 3
SFT_BATCH ?= 16
RM_EPOCHS ?= 2
RM_BATCH ?= 8
PPO_MAX_PROMPT ?= $(MAX_PROMPT_TOKENS)
PPO_MAX_NEW ?= $(MAX_COMPLETION_TOKENS)
ITERS ?= 20
PPO_ROLLOUT_BATCH ?= 128
PPO_ACTOR_LR ?= 5e-5
PPO_CRITIC_LR ?= 5e-5
