# webgpt: WebGPT comparisons (question + quotes → answer). The comparisons
# file is not available offline: point RAW at a copy of the published data.
SFT_LR ?= 2e-3
RM_LR ?= 3e-4
