#!/usr/bin/env python3
"""The table of DESIGN.md "MA-PPO's slow start" from the runs that
scripts/slow-start.sh made: per condition, the seed mean of the gold and
proxy rewards at iterations 3, 6 and 9 with 95% t-intervals over seeds, how
many seeds fail to learn (proxy score at the last iteration below the
first), and the seed means of the critic diagnostics at iterations 0-3.

    python3 scripts/slow-start-table.py            # needs python3 with polars

Reads runs/stories/default/<run>/seed-<seed>/metrics.parquet; a condition
with fewer than two finished seeds is skipped.
"""
import math
import os
import sys

import polars as pl

RUN = "runs/stories/default"
SEEDS = [int(s) for s in os.environ.get("SEEDS", " ".join(str(s) for s in range(1234, 1244))).split()]
# condition: (run directory, what changes)
CONDITIONS = {
    "ppo": ("ppo-n1", "PPO (fixed:1), for reference"),
    "base": ("ppo-n5", "MA-PPO fixed:5 as released"),
    "lt": ("ppo-n5-lt", "--macro-lambda per-token"),
    "klsum": ("ppo-n5-klsum", "--macro-kl sum"),
    "ltklsum": ("ppo-n5-lt-klsum", "per-token λ and KL sum"),
    "noclip": ("ppo-n5-noclip", "--clip-reward 1000 (no reward clip)"),
    "ppo-noclip": ("ppo-n1-noclip", "PPO, --clip-reward 1000"),
    "vclip": ("ppo-n5-vclip", "--value-clip 1000 (no value clip)"),
    "cw2": ("ppo-n5-cw2", "--critic-warmup 2"),
    "cw1vclip": ("ppo-n5-cw1vclip", "--critic-warmup 1, --value-clip 1000"),
    "nowhiten": ("ppo-n5-nowhiten", "--whiten-advantages false"),
}
# Two-sided 95% quantiles of Student's t by degrees of freedom.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365,
        8: 2.306, 9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145}


def interval(xs):
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    h = T975[n - 1] * sd / math.sqrt(n)
    return f"{m:.3f} [{m - h:.3f}, {m + h:.3f}]"


def main():
    wanted = sys.argv[1:] or list(CONDITIONS)
    print("| condition | seeds | fail to learn | gold it. 3 | gold it. 6 | gold it. 9 | proxy it. 3 | proxy it. 9 |")
    print("| --- | ---: | ---: | --- | --- | --- | --- | --- |")
    diagnostics = []
    for name in wanted:
        run, what = CONDITIONS[name]
        runs = []
        for s in SEEDS:
            f = f"{RUN}/{run}/seed-{s}/metrics.parquet"
            if os.path.exists(f):
                m = pl.read_parquet(f).sort("iteration")
                if m.height >= 10:
                    runs.append(m)
        if len(runs) < 2:
            continue
        at = lambda col, it: [m.filter(pl.col("iteration") == it)[col][0] for m in runs]
        fail = sum(1 for m in runs if m["score_mean"][-1] < m["score_mean"][0])
        print(f"| {what} | {len(runs)} | {fail} | " + " | ".join(
            [interval(at("gold_mean", it)) for it in (3, 6, 9)]
            + [interval(at("score_mean", it)) for it in (3, 9)]) + " |")
        row = [what]
        for col in ("advantage_mean", "critic_explained_variance", "critic_bias_final_token",
                    "advantage_position_corr"):
            vals = [sum(at(col, it)) / len(runs) for it in range(4)]
            row.append(" → ".join(f"{v:+.2f}" for v in vals))
        diagnostics.append(row)
    print()
    print("| condition | advantage_mean (= critic_bias), it. 0–3 | critic_explained_variance | critic_bias_final_token | advantage_position_corr |")
    print("| --- | --- | --- | --- | --- |")
    for row in diagnostics:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
