# PRESET=tiny (the default): sized so `make pipeline` finishes in well under
# 20 minutes on a 2-core CPU. A small Llama trained from scratch.
VOCAB_SIZE ?= 4096
MODEL_HIDDEN ?= 128
MODEL_LAYERS ?= 2
MODEL_HEADS ?= 4
MODEL_MLP ?= 344
MAX_PROMPT_TOKENS ?= 128
MAX_COMPLETION_TOKENS ?= 48
SFT_EPOCHS ?= 2
SFT_BATCH ?= 16
RM_EPOCHS ?= 1
RM_BATCH ?= 8
PPO_MAX_PROMPT ?= $(MAX_PROMPT_TOKENS)
PPO_MAX_NEW ?= $(MAX_COMPLETION_TOKENS)
