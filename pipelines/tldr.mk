# tldr: OpenAI TL;DR summarisation (post → summary after "TL;DR:").
SFT_LR ?= 2e-3
RM_LR ?= 3e-4
