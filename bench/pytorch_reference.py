#!/usr/bin/env python3
"""PyTorch reference for `make bench-compare`: the same measurements as
`marlhf-bench` on the same tiny Llama, with torch + transformers on the CPU.

Writes one JSON object (figures, versions, threads) to --json; marlhf-bench
--reference reads it and prints the side-by-side table. Every workload here
mirrors one in bins/bench/src/main.rs; change them together.
"""

import argparse
import json
import platform
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

# The benchmark model (marlhf: ModelConfig::tiny_llama(8192, 256, 4, 8, 688)).
VOCAB, HIDDEN, LAYERS, HEADS, MLP = 8192, 256, 4, 8, 688
TRAIN_ROWS, TRAIN_LEN = 8, 256
NEW_TOKENS = 128
ROLLOUT_ROWS = 16
GEMM_N = 2048


def config():
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=MLP,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def model(seed=1234):
    torch.manual_seed(seed)
    m = LlamaForCausalLM(config()).float()
    # No EOS: every row generates all its new tokens, as in marlhf-bench.
    m.generation_config.eos_token_id = None
    m.generation_config.pad_token_id = 0
    return m


def best_of(reps, f):
    f()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_gflops(reps):
    a = torch.randn(GEMM_N, GEMM_N)
    b = torch.randn(GEMM_N, GEMM_N)
    secs = best_of(reps, lambda: torch.mm(a, b))
    return 2.0 * GEMM_N**3 / secs / 1e9


def train_tokens_per_s(reps):
    m = model()
    m.train()
    ids = torch.tensor(
        [[(r * 131 + i * 17) % 8000 + 3 for i in range(TRAIN_LEN)] for r in range(TRAIN_ROWS)]
    )
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)

    def step():
        # Mean negative log-likelihood of every token after the first, as
        # marlhf-bench's loss over Scored { starts: 1 }.
        loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    secs = best_of(reps, step)
    return TRAIN_ROWS * TRAIN_LEN / secs


def sample(m, prompts, mask):
    with torch.inference_mode():
        out = m.generate(
            input_ids=prompts,
            attention_mask=mask,
            do_sample=True,
            temperature=0.8,
            top_k=50,
            max_new_tokens=NEW_TOKENS,
        )
    assert out.shape[1] == prompts.shape[1] + NEW_TOKENS, out.shape
    return out


def sample_tokens_per_s(batch, reps):
    m = model()
    m.eval()
    prompts = torch.tensor([[1, 5 + r, 9] for r in range(batch)])
    mask = torch.ones_like(prompts)
    torch.manual_seed(7)
    secs = best_of(reps, lambda: sample(m, prompts, mask))
    return batch * NEW_TOKENS / secs


def rollout_prompts():
    # marlhf-bench: ROLLOUT_ROWS prompts of 24 to 62 tokens, left-padded.
    rows = [[(r * 37 + i * 11) % 8000 + 3 for i in range(24 + (r * 5) % 39)] for r in range(ROLLOUT_ROWS)]
    t = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, t - len(r):] = torch.tensor(r)
        mask[k, t - len(r):] = 1
    return ids, mask


def rollout_tokens_per_s(reps):
    """The PPO rollout stage: sample, then score the sequences with the
    actor and the reference (log-probs of the new tokens), the critic (a
    value per new token) and the reward model (one score per sequence)."""
    actor, reference, critic, rm = (model(s) for s in (1, 2, 3, 4))
    for m in (actor, reference, critic, rm):
        m.eval()
    v_critic = torch.nn.Linear(HIDDEN, 1, bias=False)
    v_rm = torch.nn.Linear(HIDDEN, 1, bias=False)
    ids, mask = rollout_prompts()
    t = ids.shape[1]

    def stage():
        seqs = sample(actor, ids, mask)
        full = torch.cat([mask, torch.ones(len(seqs), NEW_TOKENS, dtype=torch.long)], 1)
        with torch.inference_mode():
            for m in (actor, reference):
                logits = m(input_ids=seqs, attention_mask=full).logits[:, t - 1 : -1]
                torch.log_softmax(logits.float() / 0.8, -1).gather(-1, seqs[:, t:, None])
            h = critic.model(input_ids=seqs, attention_mask=full).last_hidden_state
            v_critic(h[:, t - 1 : -1])
            h = rm.model(input_ids=seqs, attention_mask=full).last_hidden_state
            v_rm(h[:, -1])

    torch.manual_seed(7)
    secs = best_of(reps, stage)
    return ROLLOUT_ROWS * NEW_TOKENS / secs


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up (best is kept)")
    ap.add_argument("--json", required=True, help="where to write the figures")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    figures = {
        "gemm 2048^3 f32": gemm_gflops(args.reps),
        "train 8x256 (fwd+bwd+AdamW)": train_tokens_per_s(args.reps),
        "sample 128 new, batch 1": sample_tokens_per_s(1, args.reps),
        "sample 128 new, batch 16": sample_tokens_per_s(16, args.reps),
        "rollout 16x128 (sample + 4 scorings)": rollout_tokens_per_s(args.reps),
    }
    out = {
        "figures": figures,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
    }
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    for k, v in figures.items():
        print(f"pytorch: {k:<40} {v:12.1f}", flush=True)


if __name__ == "__main__":
    main()
