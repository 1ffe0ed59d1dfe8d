#!/bin/sh
# CPU seconds (task-clock) of marlhf-bench per workload, one thread, both modes alternating.
B=target/release/marlhf-bench
cpu() { perf stat -e task-clock -x, env RAYON_NUM_THREADS=1 MARLHF_PORTABLE=$1 $B --only "$2" --reps 3 --json /tmp/cost.json 2>&1 >/dev/null | grep task-clock | cut -d, -f1; }
for i in 1 2 3; do
  for w in "none" "train" "batch 1" "batch 16" "rollout"; do
    for p in 0 1; do echo "$i|$w|$p|$(cpu $p "$w")"; done
  done
done
