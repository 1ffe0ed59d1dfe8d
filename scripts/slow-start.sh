#!/usr/bin/env bash
# The controlled runs of DESIGN.md "MA-PPO's slow start" (issue 19): on the
# stories task, MA-PPO fixed:5 as released against one change at a time,
# and vanilla PPO (fixed:1) for reference, every condition over the same
# seeds. Each run is the cached make target of mk/ppo.mk, so an interrupted
# sweep continues where it stopped; runs land in
# runs/stories/default/ppo-<condition>[-<tag>]/seed-<seed>/metrics.parquet.
#
#   scripts/slow-start.sh                      # every condition, seeds 1234–1243
#   CONDITIONS="base lt" scripts/slow-start.sh # some of them
#   JOBS=2 scripts/slow-start.sh               # two runs at a time
#
# BIN and CARGO pass through to make (a frozen copy of the binaries:
# BIN=runs/bin CARGO=true, so that editing the code meanwhile changes
# nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"1234 1235 1236 1237 1238 1239 1240 1241 1242 1243"}
CONDITIONS=${CONDITIONS:-"ppo base lt klsum cw2 vclip nowhiten"}
JOBS=${JOBS:-1}
MAKE_ARGS=(TASK=stories ${BIN:+BIN=$BIN} ${CARGO:+CARGO=$CARGO})

# One condition: make variables on top of MA-PPO fixed:5 as released.
settings() {
  case $1 in
    ppo) echo "NGRAM=1" ;;                                  # vanilla PPO
    base) echo "NGRAM=5" ;;                                 # MA-PPO as released
    lt) echo "NGRAM=5 PPO_MACRO_LAMBDA=per-token PPO_TAG=lt" ;;
    klsum) echo "NGRAM=5 PPO_MACRO_KL=sum PPO_TAG=klsum" ;;
    cw2) echo "NGRAM=5 PPO_CRITIC_WARMUP=2 PPO_TAG=cw2" ;;
    vclip) echo "NGRAM=5 PPO_VALUE_CLIP=1000 PPO_TAG=vclip" ;;
    nowhiten) echo "NGRAM=5 PPO_WHITEN=false PPO_TAG=nowhiten" ;;
    noclip) echo "NGRAM=5 PPO_CLIP_REWARD=1000 PPO_TAG=noclip" ;;
    ppo-noclip) echo "NGRAM=1 PPO_CLIP_REWARD=1000 PPO_TAG=noclip" ;;
    ppo-vclip) echo "NGRAM=1 PPO_VALUE_CLIP=1000 PPO_TAG=vclip" ;;
    cw1vclip) echo "NGRAM=5 PPO_CRITIC_WARMUP=1 PPO_VALUE_CLIP=1000 PPO_TAG=cw1vclip" ;;
    ltklsum) echo "NGRAM=5 PPO_MACRO_LAMBDA=per-token PPO_MACRO_KL=sum PPO_TAG=lt-klsum" ;;
    *) echo "unknown condition $1" >&2; exit 2 ;;
  esac
}

jobs_file=$(mktemp)
trap 'rm -f "$jobs_file"' EXIT
for c in $CONDITIONS; do
  s=$(settings "$c")
  for seed in $SEEDS; do
    echo "make ppo ${MAKE_ARGS[*]} $s PPO_SEED=$seed" >>"$jobs_file"
  done
done
# Each line a make invocation; logs beside the runs.
mkdir -p runs/slow-start-logs
xargs -P "$JOBS" -I{} -d '\n' sh -c '{} > "runs/slow-start-logs/$(echo "{}" | tr -c "A-Za-z0-9=_-" _ | tail -c 120).log" 2>&1 && echo "done: {}" || echo "FAILED: {}"' <"$jobs_file"
