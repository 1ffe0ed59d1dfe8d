#!/usr/bin/env python3
"""PyTorch reference for `make bench-compare` and the GPU check: the same
measurements as `marlhf-bench` on the same tiny Llama (and, with --gemma, a
Gemma-2B-shaped model), with torch + transformers on the CPU or a GPU.

Writes one JSON object (figures, peak GPU memory, versions, threads) to
--json; marlhf-bench --reference reads it and prints the side-by-side table.
Every workload here mirrors one in bins/bench/src/main.rs; change them
together.
"""

import argparse
import json
import platform
import time

import torch
import transformers
from transformers import GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM

# The benchmark model (marlhf: ModelConfig::tiny_llama(8192, 256, 4, 8, 688)).
VOCAB, HIDDEN, LAYERS, HEADS, MLP = 8192, 256, 4, 8, 688
TRAIN_ROWS, TRAIN_LEN = 8, 256
NEW_TOKENS = 128
ROLLOUT_ROWS = 16
SAMPLE_BATCHES = (1, 16, 64)
GEMMA_TRAIN_ROWS, GEMMA_TRAIN_LEN = 4, 512
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}

# Where and in what the measurements run (set by main from the flags).
DEVICE = torch.device("cpu")
DTYPE = torch.float32


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


def gemma_config(layers, vocab, hidden):
    """google/gemma-2b's published config (marlhf-bench's gemma_config)."""
    return GemmaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=8 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=1,
        head_dim=256,
        max_position_embeddings=8192,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        hidden_activation="gelu_pytorch_tanh",
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )


def model(seed=1234, cfg=None, trained=False):
    """Random weights on DEVICE: f32 master weights when trained (the
    compute dtype through autocast), else held in the compute dtype."""
    torch.manual_seed(seed)
    cls = GemmaForCausalLM if isinstance(cfg, GemmaConfig) else LlamaForCausalLM
    with DEVICE:
        m = cls(cfg or config()).float()
    if not trained:
        m = m.to(DTYPE)
    # No EOS: every row generates all its new tokens, as in marlhf-bench.
    m.generation_config.eos_token_id = None
    m.generation_config.pad_token_id = 0
    return m


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def best_of(reps, f):
    f()  # warm-up
    best = float("inf")
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        f()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_n():
    # marlhf-bench's gemm_n: a 2048^3 product is over before a GPU is busy.
    return 2048 if DEVICE.type == "cpu" else 8192


def gemm_gflops(reps):
    n = gemm_n()
    a = torch.randn(n, n, device=DEVICE).to(DTYPE)
    b = torch.randn(n, n, device=DEVICE).to(DTYPE)
    secs = best_of(reps, lambda: torch.mm(a, b))
    return 2.0 * n**3 / secs / 1e9


def train_tokens_per_s(reps, cfg=None, rows=TRAIN_ROWS, length=TRAIN_LEN):
    m = model(cfg=cfg, trained=True)
    m.train()
    vocab = m.config.vocab_size
    ids = torch.tensor(
        [[(r * 131 + i * 17) % (vocab - 192) + 3 for i in range(length)] for r in range(rows)],
        device=DEVICE,
    )
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    half = DTYPE != torch.float32

    def step():
        # Mean negative log-likelihood of every token after the first, as
        # marlhf-bench's loss over Scored { starts: 1 }; in half precision
        # through autocast over the f32 weights (marlhf's f32 master weights).
        with torch.autocast(DEVICE.type, dtype=DTYPE, enabled=half):
            loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    secs = best_of(reps, step)
    return rows * length / secs


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


def sample_tokens_per_s(m, batch, reps):
    m.eval()
    prompts = torch.tensor([[1, 5 + r, 9] for r in range(batch)], device=DEVICE)
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
    return ids.to(DEVICE), mask.to(DEVICE)


def rollout_tokens_per_s(reps):
    """The PPO rollout stage: sample, then score the sequences with the
    actor and the reference (log-probs of the new tokens), the critic (a
    value per new token) and the reward model (one score per sequence)."""
    actor, reference, critic, rm = (model(s) for s in (1, 2, 3, 4))
    for m in (actor, reference, critic, rm):
        m.eval()
    v_critic = torch.nn.Linear(HIDDEN, 1, bias=False, device=DEVICE, dtype=DTYPE)
    v_rm = torch.nn.Linear(HIDDEN, 1, bias=False, device=DEVICE, dtype=DTYPE)
    ids, mask = rollout_prompts()
    t = ids.shape[1]

    def stage():
        seqs = sample(actor, ids, mask)
        full = torch.cat([mask, torch.ones(len(seqs), NEW_TOKENS, dtype=torch.long, device=DEVICE)], 1)
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


def measure(figures, memory, name, f):
    """One figure, with the GPU memory its tensors held at most."""
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    figures[name] = f()
    if DEVICE.type == "cuda":
        memory[name] = torch.cuda.max_memory_allocated() / 2**30
    print(f"pytorch: {name:<44} {figures[name]:12.1f}", flush=True)


def main():
    global DEVICE, DTYPE
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up (best is kept)")
    ap.add_argument("--json", required=True, help="where to write the figures")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on a GPU, f32 on the CPU), f32, bf16 or f16")
    ap.add_argument("--only", default=None, help="only the measurements whose name contains this")
    ap.add_argument("--gemma", action="store_true", help="also the Gemma-2B-shaped model")
    ap.add_argument("--gemma-layers", type=int, default=18)
    ap.add_argument("--gemma-vocab", type=int, default=256000)
    ap.add_argument("--gemma-hidden", type=int, default=2048)
    args = ap.parse_args()
    DEVICE = torch.device(args.device)
    dtype = args.dtype if args.dtype != "auto" else ("f32" if DEVICE.type == "cpu" else "bf16")
    DTYPE = DTYPES[dtype]
    torch.set_grad_enabled(True)
    wanted = lambda name: args.only is None or args.only in name  # noqa: E731
    figures, memory = {}, {}
    measure(figures, memory, f"gemm {gemm_n()}^3 {dtype}", lambda: gemm_gflops(args.reps))
    if wanted("train 8x256 (fwd+bwd+AdamW)"):
        measure(figures, memory, "train 8x256 (fwd+bwd+AdamW)", lambda: train_tokens_per_s(args.reps))
    samples = [b for b in SAMPLE_BATCHES if wanted(f"sample 128 new, batch {b}")]
    if samples:
        m = model()
        for b in samples:
            measure(figures, memory, f"sample 128 new, batch {b}", lambda: sample_tokens_per_s(m, b, args.reps))
        del m
    if wanted("rollout 16x128 (sample + 4 scorings)"):
        measure(figures, memory, "rollout 16x128 (sample + 4 scorings)", lambda: rollout_tokens_per_s(args.reps))
    if args.gemma:
        g = gemma_config(args.gemma_layers, args.gemma_vocab, args.gemma_hidden)
        name = "gemma-2b train 4x512 (fwd+bwd+AdamW)"
        if wanted(name):
            measure(
                figures,
                memory,
                name,
                lambda: train_tokens_per_s(args.reps, g, GEMMA_TRAIN_ROWS, GEMMA_TRAIN_LEN),
            )
        samples = [b for b in SAMPLE_BATCHES if wanted(f"gemma-2b sample 128 new, batch {b}")]
        if samples:
            m = model(cfg=g)
            for b in samples:
                measure(
                    figures,
                    memory,
                    f"gemma-2b sample 128 new, batch {b}",
                    lambda: sample_tokens_per_s(m, b, args.reps),
                )
            del m
    out = {
        "figures": figures,
        "memory_gib": memory,
        "device": args.device,
        "dtype": dtype,
        "gpu": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "blas": ("cuBLAS" if DEVICE.type == "cuda" else "MKL" if torch.backends.mkl.is_available() else "other"),
    }
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
