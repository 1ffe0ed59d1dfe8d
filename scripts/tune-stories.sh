#!/usr/bin/env bash
# The hyper-parameter search behind pipelines/stories.mk, with the same
# budget for every method (issue 18): PPO (fixed:1) and MA-PPO (fixed:5)
# each run every point of the grid below with the same tuning seeds, seeds
# that no comparison uses; each run's checkpoints answer the validation
# prompts (disjoint from the PPO and evaluation prompts); each method's
# setting is the one whose final policies score the best mean gold reward
# there, averaged over the tuning seeds. The evaluation prompts are never
# read.
#
#   scripts/tune-stories.sh                        # the grid below → runs/stories/default/tune/report.md
#   TUNE_SEEDS="97 98 99" scripts/tune-stories.sh  # more tuning seeds
#   TUNE_ONLY="lr1e-4-whiten-kl0.1" TUNE_MAKE_ARGS="NAME=tiny ITERS=2" scripts/tune-stories.sh
#                                                  # a subset of the grid, other make variables
#
# Each (point, method, seed) is its own cached run (PPO_TAG=tune-<point>,
# made by `make compare-validation`), so rerunning skips finished ones. The
# report ends with the PPO_SETTINGS_<condition> line that runs the
# comparison with each method's choice (mk/ppo.mk).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${TUNE_SEEDS:-"98 99"}
TERMS=${TUNE_TERMINATIONS:-"fixed:1 fixed:5"}
# Extra make variables for every run (e.g. NAME=… for another run directory).
read -r -a extra <<< "${TUNE_MAKE_ARGS:-}"
# Every point sets every searched variable, so the grid does not depend on
# what pipelines/stories.mk happens to default to.
points=(
  "lr1e-4-kl0.05 PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4 PPO_WHITEN=false PPO_KL=0.05"
  "lr1e-4-whiten-kl0.05 PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4 PPO_WHITEN=true PPO_KL=0.05"
  "lr3e-5-whiten-kl0.05 PPO_ACTOR_LR=3e-5 PPO_CRITIC_LR=3e-5 PPO_WHITEN=true PPO_KL=0.05"
  "lr3e-4-whiten-kl0.05 PPO_ACTOR_LR=3e-4 PPO_CRITIC_LR=3e-4 PPO_WHITEN=true PPO_KL=0.05"
  "lr1e-4-whiten-kl0.1 PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4 PPO_WHITEN=true PPO_KL=0.1"
  "lr1e-4-kl0.1 PPO_ACTOR_LR=1e-4 PPO_CRITIC_LR=1e-4 PPO_WHITEN=false PPO_KL=0.1"
)
if [ -n "${TUNE_ONLY:-}" ]; then
  kept=()
  for p in "${points[@]}"; do
    for want in $TUNE_ONLY; do
      [ "${p%% *}" = "$want" ] && kept+=("$p")
    done
  done
  [ ${#kept[@]} -gt 0 ] || { echo "TUNE_ONLY=$TUNE_ONLY names no point of the grid" >&2; exit 1; }
  points=("${kept[@]}")
fi

# The make settings of one point, and the per-condition settings cleared so
# every method runs exactly the grid's values.
clear=()
for t in $TERMS; do clear+=("PPO_SETTINGS_${t//:/-}="); done
mk() { make TASK=stories TERMINATIONS="$TERMS" SEEDS="$SEEDS" "${clear[@]}" "${extra[@]}" "$@"; }

# What a run is called: its condition's directory name (ppo-n5 for fixed:5).
group() { case $1 in fixed:*) echo "ppo-n${1#fixed:}" ;; *) echo "ppo-${1/:/-}" ;; esac; }

run_dir=$(mk -s print-run)
args=()
for p in "${points[@]}"; do
  set -- $p
  tag=$1; shift
  mk compare-validation PPO_TAG="tune-$tag" "$@" >&2
  args+=(--setting "$tag=$*")
  for t in $TERMS; do
    g=$(group "$t")
    for seed in $SEEDS; do
      args+=(--validation "$tag/$g.$seed=$run_dir/compare-tune-$tag/validation/$g-tune-$tag.$seed.parquet")
    done
  done
done
for t in $TERMS; do args+=(--label "$(group "$t")=$t"); done
mkdir -p "$run_dir/tune"
target/release/marlhf-eval tune "${args[@]}" --select-by gold \
  --title "Tuning on the stories task: the same budget for PPO and MA-PPO" \
  --out "$run_dir/tune/report.md"
cat "$run_dir/tune/report.md"
