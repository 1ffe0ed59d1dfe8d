#!/usr/bin/env bash
# The hyper-parameter search behind pipelines/stories.mk (README, "The
# stories experiment"): vanilla PPO only (fixed:1), on a tuning seed that
# no comparison uses, ranked by the mean gold reward of the last three
# iterations' rollouts. MA-PPO gets whatever vanilla PPO's best settings
# are, so any tuning advantage goes to the baseline.
#
#   scripts/tune-stories.sh            # the grid below, then a table on stdout
#
# Each point is its own cached run (PPO_TAG), so rerunning skips finished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${TUNE_SEED:-99}
points=(
  "lr1e-4 PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4 PPO_WHITEN=false"
  "lr1e-4-whiten PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4 PPO_WHITEN=true"
  "lr3e-5-whiten PPO_ACTOR_LR=3e-5 PPO_CRITIC_LR=3e-5 PPO_WHITEN=true"
  "lr3e-4-whiten PPO_ACTOR_LR=3e-4 PPO_CRITIC_LR=3e-4 PPO_WHITEN=true"
  "lr1e-4-whiten-kl0.1 PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4 PPO_WHITEN=true PPO_KL=0.1"
  "lr1e-4-kl0.1 PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4 PPO_WHITEN=false PPO_KL=0.1"
)
for p in "${points[@]}"; do
  set -- $p
  tag=$1; shift
  make ppo TASK=stories NGRAM=1 PPO_SEED="$SEED" PPO_TAG="tune-$tag" "$@" >&2
done
# The last three rows of a metrics column, averaged (marlhf-inspect prints
# "name value" lines per row).
last3() {
  target/release/marlhf-inspect "$1" -c "$2" --rows 1000 2>/dev/null \
    | awk -v k="$2" '$1 == k { v[n++] = $2 } END { s = 0; for (i = n - 3; i < n; i++) s += v[i]; printf "%.4f", s / 3 }'
}
printf '| point | gold reward, last 3 iterations | proxy score, last 3 | KL k1 per token, last 3 |\n| --- | ---: | ---: | ---: |\n'
for p in "${points[@]}"; do
  set -- $p
  m="runs/stories/default/ppo-n1-tune-$1/seed-$SEED/metrics.parquet"
  printf '| %s | %s | %s | %s |\n' "$1" "$(last3 "$m" gold_mean)" "$(last3 "$m" score_mean)" "$(last3 "$m" kl_k1_token_mean)"
done
