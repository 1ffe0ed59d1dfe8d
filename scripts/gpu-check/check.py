#!/usr/bin/env python3
"""The GPU check's checks and its one-page result (run.sh calls these; only
the standard library, so a bare python3 runs them).

  check.py settings              the pipeline's make settings, one per line
  check.py wellformed RUN        every output of the pipeline there, readable
  check.py compare RUN1 RUN2     the same bytes in both runs
  check.py report OUT            result.md from what run.sh left in OUT
  check.py verdict OUT           one line; exit 1 if a step failed
"""

import json
import math
import os
import struct
import sys
from array import array

# The pipeline of step (b): the smallest settings that run every stage for
# real (tests/pipeline.rs's, with a 2-layer model), PPO fixed:1 and fixed:5
# for two iterations, and the evaluation judged by the reward model.
# PPO_BATCH and EVAL_BATCH are left to the binaries' device defaults.
PIPELINE = [
    "TASK=hh-rlhf",
    "PRESET=tiny",
    "PREPARE_ARGS=--limit 300",
    "VOCAB_SIZE=512",
    "MODEL_HIDDEN=64",
    "MODEL_LAYERS=2",
    "MODEL_HEADS=4",
    "MODEL_MLP=128",
    "MAX_PROMPT_TOKENS=48",
    "MAX_COMPLETION_TOKENS=12",
    "SFT_ARGS=--max-steps 6",
    "RM_ARGS=--max-steps 4",
    "ITERS=2",
    "PPO_ROLLOUT_BATCH=6",
    "PPO_MINI_BATCH=3",
    "EVAL_N=6",
    "EVAL_JUDGE_SAMPLE=4",
]

# What the pipeline must leave (relative to its run directory).
EXPECTED = [
    "sft/model.safetensors",
    "sft/metrics.parquet",
    "rm/model.safetensors",
    "rm/metrics.parquet",
    "eval/responses.parquet",
    "eval/judgements.parquet",
    "eval/report.md",
] + [
    f"ppo-n{n}/seed-1234/{f}"
    for n in (1, 5)
    for f in [
        "metrics.parquet",
        "iter-002/actor/model.safetensors",
        "iter-002/critic/model.safetensors",
    ]
    + [f"iter-00{k}/{t}.parquet" for k in (0, 1) for t in ("rollouts", "segments", "advantages")]
]

# Files whose bytes hold wall-clock figures by design (DESIGN.md,
# "metrics.parquet"): two runs never match there.
WALL_CLOCK = ("metrics.parquet",)


def files_under(root):
    for d, _, names in os.walk(root):
        for n in sorted(names):
            yield os.path.relpath(os.path.join(d, n), root)


def parquet_problem(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        return "not a Parquet file (no PAR1 magic at both ends)"
    (footer,) = struct.unpack("<I", data[-8:-4])
    if footer + 12 > len(data):
        return f"footer of {footer} bytes in a file of {len(data)}"
    return None


def safetensors_problem(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        return "shorter than a safetensors header"
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as e:
        return f"header is not JSON ({e})"
    body = data[8 + n :]
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        if b > len(body):
            return f"{name}: data beyond the end of the file"
        if t["dtype"] == "F32":
            values = array("f", body[a:b])
            if not all(math.isfinite(v) for v in values):
                return f"{name}: a NaN or infinite value"
    return None


def wellformed(run):
    problems = [f"{f}: missing" for f in EXPECTED if not os.path.isfile(os.path.join(run, f))]
    checked = 0
    for rel in files_under(run):
        path = os.path.join(run, rel)
        p = None
        if rel.endswith(".parquet"):
            p = parquet_problem(path)
        elif rel.endswith(".safetensors"):
            p = safetensors_problem(path)
        elif rel.endswith(".md") and os.path.getsize(path) == 0:
            p = "empty"
        else:
            continue
        checked += 1
        if p:
            problems.append(f"{rel}: {p}")
    for p in problems:
        print(p)
    print(f"{checked} files checked, {len(problems)} problems")
    return 1 if problems else 0


def contents(run, rel):
    """A file's bytes; a report's with its run directory's path taken out
    (report.md names the files it read)."""
    data = open(os.path.join(run, rel), "rb").read()
    if rel.endswith(".md"):
        data = data.replace(os.path.abspath(run).encode(), b"RUN")
    return data


def compare(run1, run2):
    differ, missing, skipped, same = [], [], [], 0
    for rel in files_under(run1):
        if os.path.basename(rel) in WALL_CLOCK:
            skipped.append(rel)
        elif not os.path.isfile(os.path.join(run2, rel)):
            missing.append(rel)
        elif contents(run1, rel) != contents(run2, rel):
            differ.append(rel)
        else:
            same += 1
    for rel in differ:
        print(f"differs: {rel}")
    for rel in missing:
        print(f"only in the first run: {rel}")
    print(f"{same} files byte-identical, {len(differ)} differ, {len(missing)} missing, "
          f"{len(skipped)} not compared (wall-clock columns: {', '.join(WALL_CLOCK)})")
    return 1 if differ or missing else 0


def read_tsv(path):
    if not os.path.exists(path):
        return []
    return [line.rstrip("\n").split("\t") for line in open(path) if line.strip()]


def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def tail(path, n=1):
    try:
        return [l.rstrip() for l in open(path, errors="replace").read().splitlines() if l.strip()][-n:]
    except OSError:
        return []


def report(out):
    setup = dict((r[0], r[1] if len(r) > 1 else "") for r in read_tsv(os.path.join(out, "setup.tsv")))
    steps = read_tsv(os.path.join(out, "steps.tsv"))
    dry = setup.get("dry_run") == "1"
    w = []
    w.append("# marlhf GPU check" + (" — CPU dry run" if dry else ""))
    w.append("")
    if dry:
        w.append("A dry run on the CPU (`make test-cuda`): every `cuda` replaced by `cpu`, the Gemma")
        w.append("shape cut to one layer of width 256 and a 4096-token vocabulary, in f32. It tests the")
        w.append("kit and the script; its figures say nothing about a GPU.")
        w.append("")
    w.append(f"- device: `{setup.get('device', '?')}`" + (f", {setup['gpu']}" if setup.get("gpu") else ""))
    if "ld_library_path" in setup:
        w.append(f"- LD_LIBRARY_PATH: `{setup['ld_library_path'] or '(unset)'}`")
    if "pytorch" in setup:
        w.append(f"- PyTorch: {setup['pytorch']}")
    total = sum(int(r[2]) for r in steps) / 1000
    w.append(f"- total time of the steps: {total:.0f} s")
    w.append("")
    w.append("| step | verdict | seconds | limit |")
    w.append("| --- | --- | ---: | ---: |")
    for name, rc, ms, limit in steps:
        verdict = "ok" if rc == "0" else ("timed out" if rc in ("124", "137") else f"failed (exit {rc})")
        w.append(f"| {name} | {verdict} | {int(ms) / 1000:.1f} | {limit} |")
    failed = [r for r in steps if r[1] != "0"]
    for name, rc, _, _ in failed:
        w.append("")
        w.append(f"`{name}` ended with: `{' '.join(tail(os.path.join(out, name + '.log')))}`")
    w.append("")

    parity = load(os.path.join(out, "parity.json"))
    if parity:
        w.append("## (a) Log-probability parity")
        w.append("")
        w.append("Largest |Δ log-prob| over the 17 teacher-forced positions of each fixture, against")
        w.append("transformers' float32 reference and against the same checkpoint in f32 on the CPU;")
        w.append("greedy: the 16 greedy tokens equal the reference's.")
        w.append("")
        w.append("| fixture | dtype | Δ reference | Δ CPU f32 | tolerance | greedy | verdict |")
        w.append("| --- | --- | ---: | ---: | ---: | --- | --- |")
        for r in parity["rows"]:
            w.append(
                f"| {r['fixture']} | {r['dtype']} | {r['max_diff_reference']:.2e} | {r['max_diff_cpu_f32']:.2e} "
                f"| {r['tolerance']:g} | {'same' if r['greedy_equal'] else 'differ'} | {'ok' if r['ok'] else 'FAIL'} |"
            )
        w.append("")

    w.append("## (b) Pipeline on the device, twice")
    w.append("")
    for name in ("wellformed", "same-bytes"):
        lines = tail(os.path.join(out, name + ".log"), 12)
        if lines:
            w.append(f"`{name}`:")
            w.append("")
            w.append("```")
            w.extend(lines)
            w.append("```")
            w.append("")

    w.append("## (c) Throughput beside PyTorch")
    w.append("")
    any_bench = False
    for mine, theirs in (("marlhf-f32", "torch-f32"), ("marlhf-gemma", "torch-gemma")):
        m, t = load(os.path.join(out, mine + ".json")), load(os.path.join(out, theirs + ".json"))
        if not m:
            continue
        any_bench = True
        w.append(f"{m.get('dtype', '?')} on `{m.get('device', '?')}`" + (f", PyTorch {t.get('torch')}" if t else ""))
        w.append("")
        w.append("| benchmark | marlhf | PyTorch | ratio | GPU GiB marlhf | GPU GiB PyTorch |")
        w.append("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name in m.get("order", sorted(m["figures"])):
            v = m["figures"][name]
            tv = (t or {}).get("figures", {}).get(name)
            mm = m.get("memory_gib", {}).get(name)
            tm = (t or {}).get("memory_gib", {}).get(name)
            unit = "GFLOP/s" if name.startswith("gemm ") else "tokens/s"
            w.append(
                f"| {name} ({unit}) | {v:,.1f} | {'' if tv is None else f'{tv:,.1f}'} "
                f"| {'' if tv is None else f'{v / tv:.2f}x'} | {'' if mm is None else f'{mm:.2f}'} "
                f"| {'' if tm is None else f'{tm:.2f}'} |"
            )
        w.append("")
    if not any_bench:
        w.append("(no figures)")
        w.append("")
    print("\n".join(w))
    return 0


def verdict(out):
    steps = read_tsv(os.path.join(out, "steps.tsv"))
    failed = [r[0] for r in steps if r[1] != "0"]
    if failed:
        print(f"gpu-check: {len(failed)} of {len(steps)} steps failed: {', '.join(failed)} ({out}/result.md)")
        return 1
    print(f"gpu-check: all {len(steps)} steps passed ({out}/result.md)")
    return 0


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "settings":
        print("\n".join(PIPELINE))
        return 0
    return {"wellformed": wellformed, "compare": compare, "report": report, "verdict": verdict}[cmd](*args)


if __name__ == "__main__":
    sys.exit(main())
