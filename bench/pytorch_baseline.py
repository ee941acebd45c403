#!/usr/bin/python3
"""PyTorch CPU baseline for `tessera bench`: GPT-2 training throughput on random tokens.

Trains the same GPT-2 that Tessera trains (the `gpt2` convention of the reference fixtures: learned
positions, pre-LayerNorm with bias, fused qkv weight [3C, C], causal softmax attention scaled by
1/sqrt(hs), GELU tanh MLP with 4C hidden, final LayerNorm, logits = lnf(x) . wte^T with the head tied
to wte) in fp32 on the CPU, with AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on tensors with
2 or more dimensions) and global gradient-norm clipping at 1.0.

One timed step is what one Tessera train step does: forward, cross-entropy loss, backward, global
grad-norm clip, optimizer step. Batches of random tokens are made before timing. The report matches
`tessera bench`: median (upper median for an even count) / min / max step time, tokens/s, and model
GFLOP/s with the same FLOP count,
    flops_per_token = 6 * (num_parameters - vocab*C - context*C + vocab*C) + 12 * n_layer * C * seq
where num_parameters counts wte once (tied head) and context is the number of wpe rows.

Run it with Debian's PyTorch (python3-torch, 1.13; numpy is the only other dependency):
    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/pytorch_baseline.py --shape tiny --threads 2
    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/pytorch_baseline.py --shape gpt2-124m --steps 3

--threads sets torch.set_num_threads and OMP_NUM_THREADS. Debian's torch hands matmuls to OpenBLAS,
whose own thread pool ignores torch.set_num_threads: --blas-threads (default: --threads) sets
OPENBLAS_NUM_THREADS before torch loads. On a busy machine --blas-threads 1 can be much faster.
--attention matmul (default) is the explicit form: baddbmm(causal -inf mask, q, k^T, alpha=1/sqrt(hs)),
softmax, bmm with v -- the fixtures' computation, with the scale and mask fused into one call.
--attention sdpa uses torch.nn.functional.scaled_dot_product_attention(is_causal=True) (PyTorch 2.0 and
later); where it does not exist (1.13) it says so and uses --attention matmul.
"""
import argparse
import math
import os
import time

SHAPES = {
    # vocab, n_layer, n_head, C, context (wpe rows), seq, batch -- the shapes of `tessera bench --shape`.
    "tiny": dict(vocab=2048, n_layer=4, n_head=4, n_embd=128, context=128, seq=128, batch=16),
    "gpt2-124m": dict(vocab=50304, n_layer=12, n_head=12, n_embd=768, context=1024, seq=256, batch=4),
}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="OPENBLAS_NUM_THREADS, set before torch loads (default: --threads)")
    ap.add_argument("--attention", choices=["matmul", "sdpa"], default="matmul",
                    help="matmul: explicit q.k^T with causal mask, softmax, @v (as the fixtures); "
                         "sdpa: F.scaled_dot_product_attention(is_causal=True) where it exists")
    ap.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4, as tessera bench)")
    ap.add_argument("--foreach", choices=["on", "off"], default="off",
                    help="AdamW foreach implementation (default off, as the fixtures; on the CPU in 1.13 it "
                         "was not measurably faster)")
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    if a.steps < 1 or a.warmup < 0 or a.threads < 1 or a.blas_threads < 0:
        ap.error("--steps and --threads must be >= 1, --warmup and --blas-threads >= 0")
    a.blas_threads = a.blas_threads or a.threads
    return a


ARGS = parse_args()
# Before torch loads: OpenMP and OpenBLAS size their thread pools from the environment.
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.blas_threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def make_params(s, gen):
    """Parameters by the fixtures' names and initialisation (normal 0.02, residual projections scaled)."""
    V, L, C, ctx = s["vocab"], s["n_layer"], s["n_embd"], s["context"]

    def w(*shape, std=0.02):
        return torch.randn(*shape, generator=gen) * std

    proj_std = 0.02 / math.sqrt(2 * L)
    P = {"wte": w(V, C), "wpe": w(ctx, C)}
    for l in range(L):
        h = f"h.{l}."
        P.update({
            h + "ln1.weight": torch.ones(C), h + "ln1.bias": torch.zeros(C),
            h + "attn.qkv.weight": w(3 * C, C), h + "attn.qkv.bias": torch.zeros(3 * C),
            h + "attn.proj.weight": w(C, C, std=proj_std), h + "attn.proj.bias": torch.zeros(C),
            h + "ln2.weight": torch.ones(C), h + "ln2.bias": torch.zeros(C),
            h + "mlp.fc.weight": w(4 * C, C), h + "mlp.fc.bias": torch.zeros(4 * C),
            h + "mlp.proj.weight": w(C, 4 * C, std=proj_std), h + "mlp.proj.bias": torch.zeros(C),
        })
    P.update({"lnf.weight": torch.ones(C), "lnf.bias": torch.zeros(C)})
    return {k: v.float().contiguous().requires_grad_(True) for k, v in P.items()}


def make_forward(s, attention):
    """The GPT-2 forward pass, functional over a parameter dict; returns (B, T, vocab) logits."""
    L, H, C = s["n_layer"], s["n_head"], s["n_embd"]
    hs = C // H
    scale = 1.0 / math.sqrt(hs)
    # Additive causal mask: -inf above the diagonal (the future), 0 elsewhere.
    mask = torch.zeros(s["seq"], s["seq"]).masked_fill(
        torch.ones(s["seq"], s["seq"], dtype=torch.bool).triu(1), float("-inf"))

    def attend_matmul(q, k, v):
        B, _, T, _ = q.shape
        q, k, v = (t.reshape(B * H, T, hs) for t in (q, k, v))
        att = torch.baddbmm(mask[:T, :T], q, k.transpose(1, 2), alpha=scale).softmax(-1)  # mask + scale*q.k^T
        return torch.bmm(att, v).view(B, H, T, hs)

    def attend_sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    attend = attend_sdpa if attention == "sdpa" else attend_matmul

    def forward(P, idx):
        B, T = idx.shape
        x = F.embedding(idx, P["wte"]) + P["wpe"][:T]
        for l in range(L):
            h = f"h.{l}."
            y = F.layer_norm(x, (C,), P[h + "ln1.weight"], P[h + "ln1.bias"], 1e-5)
            qkv = F.linear(y, P[h + "attn.qkv.weight"], P[h + "attn.qkv.bias"])
            q, k, v = qkv.view(B, T, 3, H, hs).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, hs)
            y = attend(q, k, v).transpose(1, 2).reshape(B, T, C)
            x = x + F.linear(y, P[h + "attn.proj.weight"], P[h + "attn.proj.bias"])
            y = F.layer_norm(x, (C,), P[h + "ln2.weight"], P[h + "ln2.bias"], 1e-5)
            y = F.gelu(F.linear(y, P[h + "mlp.fc.weight"], P[h + "mlp.fc.bias"]), approximate="tanh")
            x = x + F.linear(y, P[h + "mlp.proj.weight"], P[h + "mlp.proj.bias"])
        x = F.layer_norm(x, (C,), P["lnf.weight"], P["lnf.bias"], 1e-5)
        return F.linear(x, P["wte"])  # tied head, no bias

    return forward


def main():
    a = ARGS
    s = SHAPES[a.shape]
    torch.set_num_threads(a.threads)

    attention = label = a.attention
    if attention == "sdpa" and not hasattr(F, "scaled_dot_product_attention"):
        print(f"note: torch {torch.__version__} has no torch.nn.functional.scaled_dot_product_attention "
              "(PyTorch 2.0+); using --attention matmul")
        attention, label = "matmul", "matmul (sdpa not in this torch)"

    gen = torch.Generator().manual_seed(a.seed)
    P = make_params(s, gen)
    forward = make_forward(s, attention)
    params = list(P.values())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, foreach=(a.foreach == "on"))

    V, C, L, T, B = s["vocab"], s["n_embd"], s["n_layer"], s["seq"], s["batch"]
    rng = np.random.default_rng(a.seed)
    n = a.warmup + a.steps
    tokens = torch.from_numpy(rng.integers(0, V, size=(n, B, T + 1), dtype=np.int64))
    batches = [(tokens[i, :, :-1].contiguous(), tokens[i, :, 1:].contiguous()) for i in range(n)]

    def train_step(inputs, targets):
        opt.zero_grad(set_to_none=True)
        logits = forward(P, inputs)
        loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item(), norm.item()

    num_parameters = sum(p.numel() for p in params)  # wte once: the head is tied
    flops_per_token = 6.0 * (num_parameters - V * C - s["context"] * C + V * C) + 12.0 * L * C * T
    tokens_per_step = B * T

    print(f"pytorch-baseline {a.shape}: torch {torch.__version__}, {torch.get_num_threads()} thread(s) "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, OPENBLAS_NUM_THREADS={a.blas_threads}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), attention {label}, "
          f"AdamW foreach {a.foreach}")
    print(f"  model: vocab {V}, {L} layers, {s['n_head']} heads, C {C}, context {s['context']}; "
          f"batch {B} x seq {T}; {num_parameters:,} parameters")
    print(f"  {a.steps} timed steps after {a.warmup} warm-up", flush=True)

    for i in range(a.warmup):
        loss, norm = train_step(*batches[i])
        print(f"  warm-up {i}: loss {loss:.4f} grad_norm {norm:.4f}", flush=True)
    times = []
    for i in range(a.warmup, n):
        start = time.perf_counter()
        loss, norm = train_step(*batches[i])
        times.append(time.perf_counter() - start)
        print(f"  step {i - a.warmup}: {times[-1] * 1e3:.1f} ms  loss {loss:.4f} grad_norm {norm:.4f}", flush=True)

    times.sort()
    median = times[len(times) // 2]
    print(f"  step time median {median * 1e3:.1f} ms (min {times[0] * 1e3:.1f}, max {times[-1] * 1e3:.1f})")
    print(f"  tokens/s: {tokens_per_step / median:.1f}")
    print(f"  model GFLOP/s: {flops_per_token * tokens_per_step / median / 1e9:.2f}  "
          f"({flops_per_token / 1e9:.4f} GFLOP per token)")


if __name__ == "__main__":
    main()
