#!/usr/bin/env bash
# The hyper-parameter search behind pipelines/stories.mk (README, "The
# stories experiment"): vanilla PPO only (fixed:1), on tuning seeds that
# no comparison uses, ranked by the mean gold reward of the last three
# iterations' rollouts, averaged over the tuning seeds. MA-PPO gets
# whatever vanilla PPO's best settings are, so any tuning advantage goes
# to the baseline.
#
#   scripts/tune-stories.sh            # the grid below, then a table on stdout
#
# Each point is its own cached run (PPO_TAG), so rerunning skips finished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${TUNE_SEEDS:-"98 99"}
# Every point sets every searched variable, so the grid does not depend on
# what pipelines/stories.mk happens to default to.
points=(
  "lr1e-4 PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4 PPO_WHITEN=false PPO_KL=0.05"
  "lr1e-4-whiten PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4 PPO_WHITEN=true PPO_KL=0.05"
  "lr3e-5-whiten PPO_ACTOR_LR=3e-5 PPO_CRITIC_LR=3e-5 PPO_WHITEN=true PPO_KL=0.05"
  "lr3e-4-whiten PPO_ACTOR_LR=3e-4 PPO_CRITIC_LR=3e-4 PPO_WHITEN=true PPO_KL=0.05"
  "lr1e-4-whiten-kl0.1 PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4 PPO_WHITEN=true PPO_KL=0.1"
  "lr1e-4-kl0.1 PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4 PPO_WHITEN=false PPO_KL=0.1"
)
for p in "${points[@]}"; do
  set -- $p
  tag=$1; shift
  for seed in $SEEDS; do
    make ppo TASK=stories NGRAM=1 PPO_SEED="$seed" PPO_TAG="tune-$tag" "$@" >&2
  done
done
# The last three rows of a metrics column, averaged over the last three
# iterations and the seeds (marlhf-inspect prints "name value" lines per
# row).
last3() { # $1: point, $2: column
  for seed in $SEEDS; do
    target/release/marlhf-inspect "runs/stories/default/ppo-n1-tune-$1/seed-$seed/metrics.parquet" \
      -c "$2" --rows 1000 2>/dev/null \
      | awk -v k="$2" '$1 == k { v[n++] = $2 } END { for (i = n - 3; i < n; i++) print v[i] }'
  done | awk '{ s += $1; n++ } END { printf "%.4f", s / n }'
}
printf '| point | gold reward, last 3 iterations | proxy score, last 3 | KL k1 per token, last 3 |\n| --- | ---: | ---: | ---: |\n'
for p in "${points[@]}"; do
  set -- $p
  printf '| %s | %s | %s | %s |\n' "$1" "$(last3 "$1" gold_mean)" "$(last3 "$1" score_mean)" "$(last3 "$1" kl_k1_token_mean)"
done
