#!/bin/sh
# repro-check.sh: which CPU differences change marlhf's output bytes, and
# that portable mode (MARLHF_PORTABLE=1) removes them. DESIGN.md,
# "Reproducibility across machines"; run by `make repro-check`.
#
# It emulates other CPUs two ways and compares output files byte for byte:
#  - caches: in a private mount namespace, /sys/devices/system/cpu/cpu*/cache
#    (what the gemm crate sizes its depth blocks from) describes a Zen 4's
#    L1 data cache (32 KiB 8-way), a Zen 5's (48 KiB 12-way) or a 48 KiB
#    12-way one shared by two hardware threads; everything runs natively;
#  - instruction sets: qemu-user's CPU models (Haswell-v4: AVX2 and FMA
#    without AVX-512; EPYC-Rome: a Zen 2, here with a Zen 4's caches;
#    Nehalem: no AVX), running `marlhf-bench --fingerprint`, a workload
#    small enough for an emulator (a few minutes each).
# The workloads: a short stories chain (sampling, RM training, a rollout,
# segmentation, a PPO update with stories260K from ../shared), the
# fingerprint, and both at other thread counts.
#
# Needs root (the mount namespace) and qemu-user (installed with apt-get
# when missing), the release binaries (`make build`) and
# ../shared/models/stories260K. Exits 1 on any failed expectation.
set -eu

BIN=${BIN:-target/release}
OUT=${OUT:-runs/repro-check}
MODEL=${MODEL:-../shared/models/stories260K}

die() { echo "repro-check: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root: it shows emulated caches in sysfs inside a private mount namespace (unshare -m)"
unshare -m true 2>/dev/null || die "cannot create a mount namespace (unshare -m); in a container it needs CAP_SYS_ADMIN"
for f in "$BIN/marlhf-bench" "$BIN/marlhf-rm" "$MODEL/stories260K.bin"; do
  [ -e "$f" ] || die "$f is missing (make build; ../shared holds the model)"
done
if ! command -v qemu-x86_64 >/dev/null; then
  command -v apt-get >/dev/null || die "qemu-x86_64 not found and no apt-get to install qemu-user"
  echo "==> installing qemu-user (apt-get)"
  apt-get install -y qemu-user >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y qemu-user >/dev/null 2>&1; } ||
    die "apt-get install qemu-user failed"
fi

rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
FAILED=0

# entry DIR LEVEL TYPE KIB WAYS SHARED: one cache's description.
entry() {
  mkdir -p "$1"
  echo "$2" >"$1/level"
  echo "$3" >"$1/type"
  echo "${4}K" >"$1/size"
  echo "$5" >"$1/ways_of_associativity"
  echo 64 >"$1/coherency_line_size"
  echo "$6" >"$1/shared_cpu_list"
}

# fake NAME L1KIB L1WAYS L2KIB L2WAYS L3KIB L3WAYS SHARED: a sysfs cache
# description for every CPU of this machine; SHARED lists the CPUs sharing
# its L1 and L2 ("self": one hardware thread per core).
fake() {
  for c in /sys/devices/system/cpu/cpu[0-9]*; do
    n=${c##*/}
    sh=$8
    [ "$sh" = self ] && sh=${n#cpu}
    d=$OUT/fake-$1/sys/devices/system/cpu/$n/cache
    entry "$d/index0" 1 Data "$2" "$3" "$sh"
    entry "$d/index1" 1 Instruction 32 8 "$sh"
    entry "$d/index2" 2 Unified "$4" "$5" "$sh"
    entry "$d/index3" 3 Unified "$6" "$7" 0-255
  done
}
fake zen4 32 8 1024 8 32768 16 self
fake zen5 48 12 1024 16 32768 16 self
fake smt 48 12 2048 16 32768 16 0-1

# under GEOMETRY CMD...: CMD seeing GEOMETRY's caches in sysfs.
under() {
  g=$1
  shift
  unshare -m sh -c 'for c in /sys/devices/system/cpu/cpu[0-9]*; do
      mount --bind "$0/sys/devices/system/cpu/${c##*/}/cache" "$c/cache" || exit 1; done; exec "$@"' \
    "$OUT/fake-$g" "$@"
}

# chain NAME [PREFIX...]: the stories chain into $OUT/NAME, every stage run
# as PREFIX STAGE ARGS; the hash of each output (not the metrics tables,
# which hold wall times) into $OUT/NAME.sha.
chain() {
  o=$OUT/$1
  shift
  mkdir -p "$o"
  q() {
    "$@" >>"$o/log" 2>&1 || die "failed: $* (log: $o/log)"
  }
  q "$@" "$BIN/marlhf-stories" prompts --out "$o/data" --seed 7 --ppo 64 --eval 8 --pairs 24
  q "$@" "$BIN/marlhf-import" --model "$MODEL/stories260K.bin" --tokenizer "$MODEL/tok512.bin" --out "$o/sft"
  q "$@" "$BIN/marlhf-eval" generate --policy "sft=$o/sft" --prompts "$o/data/pair_prompts.parquet" \
    --out "$o/data/pair_samples.parquet" --n 24 --samples-per-prompt 4 --max-prompt-tokens 64 \
    --max-new-tokens 96 --temperature 0.8 --top-k 0 --batch-size 32 --seed 7 --gold-model "$o/sft" --device cpu
  q "$@" "$BIN/marlhf-stories" pairs --responses "$o/data/pair_samples.parquet" --out "$o/data/pairs.parquet" \
    --heldout "$o/data/pairs_heldout.parquet" --heldout-fraction 0.25 --label-noise 0 --seed 7
  q "$@" "$BIN/marlhf-rm" --data "$o/data/pairs.parquet" --init "$o/sft" --out "$o/rm" --lr 3e-3 --epochs 1 \
    --batch-size 8 --max-prompt-tokens 64 --max-completion-tokens 96 --seed 7 --device cpu
  q "$@" "$BIN/marlhf-rollout" --prompts "$o/data/prompts.parquet" --actor "$o/sft" --reference "$o/sft" \
    --critic "$o/rm" --reward-model "$o/rm" --out "$o/ppo/rollouts.parquet" --iteration 0 --rollout-batch 16 \
    --batch-size 16 --max-prompt-tokens 64 --max-new-tokens 96 --top-k 0 --seed 7 --device cpu
  q "$@" "$BIN/marlhf-segment" --rollouts "$o/ppo/rollouts.parquet" --out "$o/ppo/segments.parquet" \
    --termination fixed:5 --seed 7 --tokenizer "$o/sft"
  q "$@" "$BIN/marlhf-update" --rollouts "$o/ppo/rollouts.parquet" --segments "$o/ppo/segments.parquet" \
    --actor "$o/sft" --critic "$o/rm" --out-actor "$o/ppo/actor" --out-critic "$o/ppo/critic" \
    --advantages "$o/ppo/advantages.parquet" --metrics "$o/ppo/metrics.parquet" --recipe default \
    --total-iterations 12 --kl-coef 0.1 --actor-lr 1e-4 --critic-lr 1e-4 --whiten-advantages true \
    --seed 7 --device cpu
  (cd "$o" && find . -type f \( -name '*.parquet' -o -name '*.safetensors' \) ! -name 'metrics*' |
    sort | xargs sha256sum) >"$o.sha"
}

# fp NAME [PREFIX...]: `marlhf-bench --fingerprint` run as PREFIX BENCH,
# its lines without the header into $OUT/NAME.fp.
fp() {
  n=$1
  shift
  "$@" "$BIN/marlhf-bench" --fingerprint >"$OUT/$n.full" 2>"$OUT/$n.err" ||
    die "fingerprint $n failed: $(tail -1 "$OUT/$n.err")"
  grep -v '^#' "$OUT/$n.full" >"$OUT/$n.fp"
}

# expect same|differ A B WHAT: compares two result files.
expect() {
  if cmp -s "$OUT/$2" "$OUT/$3"; then r=same; else r=differ; fi
  if [ "$r" = "$1" ]; then
    printf '  ok    %-6s %s\n' "$1" "$4"
  else
    printf '  FAIL  %-6s %s (%s, %s)\n' "$1" "$4" "$2" "$3"
    FAILED=1
  fi
}

echo "==> $OUT: the stories chain and the fingerprint under emulated caches (native)"
for g in zen4 zen5 smt; do
  for p in 0 1; do
    export MARLHF_PORTABLE=$p
    chain "chain-$g-$p" under "$g"
    fp "fp-$g-$p" under "$g"
  done
done
echo "==> this machine's caches at 1 and 3 threads (the 3 with candle's own pool at 2)"
for t in 1 3; do
  for p in 0 1; do
    export MARLHF_PORTABLE=$p RAYON_NUM_THREADS=$t CANDLE_NUM_THREADS=$((t == 3 ? 2 : 1))
    chain "chain-t$t-$p"
    fp "fp-t$t-$p"
  done
done
unset RAYON_NUM_THREADS CANDLE_NUM_THREADS
echo "==> the fingerprint on emulated CPUs (qemu-user, minutes each)"
export MARLHF_PORTABLE=1
fp fp-haswell-1 qemu-x86_64 -cpu Haswell-v4
fp fp-rome-zen5-1 qemu-x86_64 -cpu EPYC-Rome -L "$OUT/fake-zen5"
fp fp-nehalem-1 qemu-x86_64 -cpu Nehalem
export MARLHF_PORTABLE=0
fp fp-rome-zen4-0 qemu-x86_64 -cpu EPYC-Rome -L "$OUT/fake-zen4"

echo "==> results"
for k in chain fp; do
  e=sha
  [ $k = fp ] && e=fp
  expect differ "$k-zen4-0.$e" "$k-zen5-0.$e" "$k: default mode, Zen 4's L1 (depth 512) vs Zen 5's (1024)"
  expect same "$k-zen4-0.$e" "$k-zen4-1.$e" "$k: portable mode = the default mode of a depth-512 machine"
  for g in zen5 smt t1 t3; do
    expect same "$k-zen4-1.$e" "$k-$g-1.$e" "$k: portable mode, Zen 4's caches vs $g"
  done
  expect same "$k-t1-0.$e" "$k-t3-0.$e" "$k: default mode, 1 vs 3 threads"
done
expect differ fp-smt-0.fp fp-zen5-0.fp "fp: default mode, an L1 shared by 2 threads (depth 672) vs not (1024)"
expect same fp-haswell-1.fp fp-zen4-1.fp "fp: portable mode, Haswell (AVX2 and FMA, no AVX-512) vs this CPU"
expect same fp-rome-zen5-1.fp fp-zen4-1.fp "fp: portable mode, a Zen 2 (no AVX-512) with Zen 5's caches vs this CPU"
expect same fp-rome-zen4-0.fp fp-zen4-0.fp "fp: default mode, a Zen 2 with Zen 4's caches vs this CPU with them"
expect differ fp-nehalem-1.fp fp-zen4-1.fp "fp: portable mode without AVX2/FMA (Nehalem): other kernels, other bytes"
[ "$FAILED" = 0 ] || die "some expectations failed (files under $OUT)"
echo "repro-check: all expectations hold (files under $OUT)"
