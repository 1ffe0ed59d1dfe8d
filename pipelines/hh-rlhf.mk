# hh-rlhf: Anthropic HH-RLHF dialogues (helpful-base, helpful-rejection-sampled,
# harmless-base). Prompt = the dialogue up to the last "\n\nAssistant:".
# Learning rates: the paper's (Gemma-2B) are 5e-5 / 1e-5 / 1.5e-5; a model
# trained from scratch needs larger ones.
SFT_LR ?= 2e-3
RM_LR ?= 3e-4
