#!/usr/bin/python3
"""An independent reader of `tessera export --format hf` directories: no Tessera code, numpy and h5py only.

Parses the safetensors files (one, or shards through model.safetensors.index.json) and config.json itself,
runs the forward pass of Hugging Face's GPT2LMHeadModel or LlamaForCausalLM with Hugging Face's names and
layouts (GPT-2: Conv1D weights stored [in, out], GELU tanh, tied head; Llama: RMSNorm, rotate-half RoPE with
rope_theta, grouped-query attention, SwiGLU), and computes the mean cross-entropy of a tessera fixture's step-0
batch (data/inputs[0] -> data/targets[0]). It must equal the fixture's expected/loss[0] (PyTorch's) within
--rtol. Exit 0 on a match, 1 otherwise.

usage: hf_reference.py --hf DIR --fixture FILE.h5 [--rtol 1e-5]
"""
import argparse
import json
import os
import struct
import sys

import h5py
import numpy as np


def read_safetensors(path):
    """{name: float64 array} of one safetensors file, checking its header."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    assert 8 + n <= len(data), f"{path}: header length {n} past the end"
    header = json.loads(data[8:8 + n].decode("utf-8"))
    assert header.get("__metadata__", {}).get("format") == "pt", f"{path}: __metadata__.format is not pt"
    body = data[8 + n:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = body[begin:end]
        shape = tuple(entry["shape"])
        if entry["dtype"] == "F32":
            values = np.frombuffer(raw, dtype="<f4")
        elif entry["dtype"] == "BF16":
            values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: {name} has dtype {entry['dtype']}")
        assert values.size == int(np.prod(shape)), f"{path}: {name} size does not match its shape"
        tensors[name] = values.reshape(shape).astype(np.float64)
    return tensors


def read_weights(directory):
    index = os.path.join(directory, "model.safetensors.index.json")
    if not os.path.exists(index):
        return read_safetensors(os.path.join(directory, "model.safetensors"))
    with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    tensors = {}
    for file in sorted(set(weight_map.values())):
        tensors.update(read_safetensors(os.path.join(directory, file)))
    assert set(tensors) == set(weight_map), "the index and the shards name different tensors"
    return tensors


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def causal_attention(q, k, v):
    """q, k, v: [B, heads, T, hs]; scaled by 1/sqrt(hs), causal."""
    T, hs = q.shape[2], q.shape[3]
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    return softmax(scores) @ v


def cross_entropy(logits, targets):
    logits = logits - logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return float(-picked.mean())


def gpt2_loss(cfg, w, inputs, targets):
    assert cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["activation_function"] == "gelu_new"
    assert "lm_head.weight" not in w and cfg["tie_word_embeddings"], "GPT-2's head is tied to wte"
    C, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    B, T = inputs.shape
    hs = C // H

    def layer_norm(x, prefix):
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w[prefix + ".weight"] + w[prefix + ".bias"]

    def conv1d(x, prefix):  # Hugging Face's Conv1D: weight [in, out], y = x W + b
        return x @ w[prefix + ".weight"] + w[prefix + ".bias"]

    def gelu_new(x):
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))

    def heads(x):
        return x.reshape(B, T, H, hs).transpose(0, 2, 1, 3)

    x = w["transformer.wte.weight"][inputs] + w["transformer.wpe.weight"][np.arange(T)]
    for l in range(cfg["n_layer"]):
        p = f"transformer.h.{l}."
        qkv = conv1d(layer_norm(x, p + "ln_1"), p + "attn.c_attn")
        q, k, v = (heads(t) for t in np.split(qkv, 3, axis=-1))
        y = causal_attention(q, k, v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + conv1d(y, p + "attn.c_proj")
        x = x + conv1d(gelu_new(conv1d(layer_norm(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    x = layer_norm(x, "transformer.ln_f")
    return cross_entropy(x @ w["transformer.wte.weight"].T, targets)


def llama_loss(cfg, w, inputs, targets):
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["hidden_act"] == "silu"
    assert not cfg["attention_bias"] and not cfg["mlp_bias"]
    C, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    B, T = inputs.shape
    hs = C // H

    def rms_norm(x, name):
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w[name]

    def linear(x, name):  # nn.Linear: weight [out, in], y = x W^T
        return x @ w[name].T

    # Rotary embedding as LlamaRotaryEmbedding and apply_rotary_pos_emb: rotate-half.
    inv_freq = 1.0 / theta ** (np.arange(0, hs, 2, dtype=np.float64) / hs)
    freqs = np.arange(T, dtype=np.float64)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)

    def rotate_half(x):
        return np.concatenate([-x[..., hs // 2:], x[..., :hs // 2]], axis=-1)

    def rope(x):
        return x * cos + rotate_half(x) * sin

    def heads(x, n):
        return x.reshape(B, T, n, hs).transpose(0, 2, 1, 3)

    def silu(x):
        return x / (1.0 + np.exp(-x))

    x = w["model.embed_tokens.weight"][inputs]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        a = rms_norm(x, p + "input_layernorm.weight")
        q = rope(heads(linear(a, p + "self_attn.q_proj.weight"), H))
        k = rope(heads(linear(a, p + "self_attn.k_proj.weight"), KV))
        v = heads(linear(a, p + "self_attn.v_proj.weight"), KV)
        # repeat_kv: query head h reads kv head h // (H / KV).
        k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)
        y = causal_attention(q, k, v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + linear(y, p + "self_attn.o_proj.weight")
        m = rms_norm(x, p + "post_attention_layernorm.weight")
        gated = silu(linear(m, p + "mlp.gate_proj.weight")) * linear(m, p + "mlp.up_proj.weight")
        x = x + linear(gated, p + "mlp.down_proj.weight")
    x = rms_norm(x, "model.norm.weight")
    if cfg["tie_word_embeddings"]:
        assert "lm_head.weight" not in w
        head = w["model.embed_tokens.weight"]
    else:
        head = w["lm_head.weight"]
    return cross_entropy(x @ head.T, targets)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hf", required=True)
    parser.add_argument("--fixture", required=True)
    parser.add_argument("--rtol", type=float, default=1e-5)
    args = parser.parse_args()
    with open(os.path.join(args.hf, "config.json")) as f:
        cfg = json.load(f)
    weights = read_weights(args.hf)
    with h5py.File(args.fixture, "r") as f:
        inputs = f["data/inputs"][0].astype(np.int64)
        targets = f["data/targets"][0].astype(np.int64)
        expected = float(f["expected/loss"][0])
    loss = {"gpt2": gpt2_loss, "llama": llama_loss}[cfg["model_type"]](cfg, weights, inputs, targets)
    error = abs(loss - expected) / abs(expected)
    verdict = "PASS" if error <= args.rtol else "FAIL"
    print(f"{cfg['model_type']} ({cfg['torch_dtype']}): loss {loss:.8f}, fixture {expected:.8f}, "
          f"relative error {error:.2e} (tolerance {args.rtol:g}): {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
