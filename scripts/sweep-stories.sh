#!/usr/bin/env bash
# The wider sweep of README "The stories experiment": termination conditions
# fixed:1 (PPO), fixed:3, fixed:5, fixed:10, randomized:3, ppl, parsing:5 and,
# for fixed:5, the value functions unit and position besides equal, every one
# with the seeds of SEEDS (10, as make compare TASK=stories), from one proxy
# reward model; one report with 95% intervals, final and early-stopped
# policies, in runs/stories/default/sweep/report.md.
#
#   scripts/sweep-stories.sh                 # reuses every run `make compare TASK=stories` made
#
# Every run and every final policy's responses are the cached make targets of
# mk/ppo.mk and mk/compare.mk, so an interrupted sweep continues where it
# stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"$(seq -s ' ' 1234 1243)"}
TERMS="fixed:1 fixed:3 fixed:5 fixed:10 randomized:3 ppl parsing:5"
RUN=runs/stories/default

make compare TASK=stories SEEDS="$SEEDS" TERMINATIONS="$TERMS" >&2
for vf in unit position; do
  make compare TASK=stories SEEDS="$SEEDS" TERMINATIONS="fixed:5" \
    PPO_TAG="vf-$vf" PPO_VALUE_FUNCTION="$vf" >&2
done

# One report over all of them: the runs and responses the targets above made.
args=()
group() { # $1: run directory name (ppo-…), $2: label, $3: compare directory
  for s in $SEEDS; do
    args+=(--run "$1.$s=$RUN/$1/seed-$s" --responses "$RUN/$3/responses/$1.$s.parquet"
      --validation "$1.$s=$RUN/$3/validation/$1.$s.parquet" --early-responses "$RUN/$3/early/$1.$s.parquet")
  done
  args+=(--label "$1=$2")
}
for t in $TERMS; do
  case $t in
    fixed:*) d="ppo-n${t#fixed:}" ;;
    *) d="ppo-${t/:/-}" ;;
  esac
  group "$d" "$t" compare
done
group ppo-n5-vf-unit "fixed:5, unit" compare-vf-unit
group ppo-n5-vf-position "fixed:5, position" compare-vf-position
mkdir -p "$RUN/sweep"
target/release/marlhf-eval compare "${args[@]}" --baseline ppo-n1 --select-by gold \
  --rm-accuracy "$RUN/rm/gold_accuracy.parquet" \
  --curve gold_mean --curve score_mean --curve kl_k1_token_mean --curve entropy \
  --task stories --title "Termination conditions and value functions on the stories task" \
  --out "$RUN/sweep/report.md"
