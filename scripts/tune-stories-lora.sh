#!/usr/bin/env bash
# The learning rate of LoRA PPO on the stories task (README, "LoRA on the
# stories task"): rank-16 adapters (alpha 16, all seven projections) on
# the actor and the critic, vanilla PPO only (fixed:1), on the tuning
# seeds that no comparison uses, ranked by the mean gold reward of the
# last three iterations' rollouts over the seeds (the criterion
# scripts/tune-stories.sh used before it moved to validation prompts). Everything else as pipelines/stories.mk sets it for LoRA runs
# (KL 0.1, whitened advantages: the full fine-tune's setting when this
# search ran). An adapter starts at B = 0 and moves a few
# million times fewer numbers, so it needs a larger step than full
# fine-tuning's 1e-4; the grid starts there.
#
#   scripts/tune-stories-lora.sh       # the grid below, then a table on stdout
#
# Each point is its own cached run (PPO_TAG), so rerunning skips finished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${TUNE_SEEDS:-"98 99"}
RANK=${TUNE_LORA_RANK:-16}
points=(
  "lr1e-4 PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4"
  "lr3e-4 PPO_ACTOR_LR=3e-4 PPO_CRITIC_LR=3e-4"
  "lr1e-3 PPO_ACTOR_LR=1e-3 PPO_CRITIC_LR=1e-3"
  "lr3e-3 PPO_ACTOR_LR=3e-3 PPO_CRITIC_LR=3e-3"
)
for p in "${points[@]}"; do
  set -- $p
  tag=$1; shift
  for seed in $SEEDS; do
    make ppo TASK=stories NGRAM=1 PPO_LORA_RANK="$RANK" PPO_SEED="$seed" PPO_TAG="tune-$tag" "$@" >&2
  done
done
last3() { # $1: point, $2: column
  for seed in $SEEDS; do
    target/release/marlhf-inspect "runs/stories/default/ppo-n1-lora$RANK-tune-$1/seed-$seed/metrics.parquet" \
      -c "$2" --rows 1000 2>/dev/null \
      | awk -v k="$2" '$1 == k { v[n++] = $2 } END { for (i = n - 3; i < n; i++) print v[i] }'
  done | awk '{ s += $1; n++ } END { printf "%.4f", s / n }'
}
printf '| point (LoRA r %s) | gold reward, last 3 iterations | proxy score, last 3 | KL k1 per token, last 3 |\n| --- | ---: | ---: | ---: |\n' "$RANK"
for p in "${points[@]}"; do
  set -- $p
  printf '| %s | %s | %s | %s |\n' "$1" "$(last3 "$1" gold_mean)" "$(last3 "$1" score_mean)" "$(last3 "$1" kl_k1_token_mean)"
done
