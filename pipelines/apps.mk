# apps: APPS programming problems; evaluated by pass@k on unit tests, no
# preference pairs (the reward is the tests'). Offline only 5 problems.
SFT_LR ?= 2e-3
RM_LR ?= 3e-4
