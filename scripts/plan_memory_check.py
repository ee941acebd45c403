#!/usr/bin/python3
"""Compares `tessera plan`'s memory prediction per rank with the peak resident memory `tessera train` measures
(the "peak memory:" line: the largest VmHWM of any rank) over layouts of two model sizes on CPU, and fails when
any layout is off by more than --max-error. The table in docs/planner.md comes from this script; CTest runs it
as plan_memory_rss.

usage: scripts/plan_memory_check.py TESSERA [--mpirun mpirun] [--max-error 0.10]
"""
import argparse, json, os, re, subprocess, sys, tempfile

# Two sizes: the tiny GPT-2 (1.1M parameters) and a Llama about six times larger (6.4M).
MODELS = {
    "gpt2-1M": 'model { arch: GPT2 vocab_size: 2048 n_layer: 4 n_head: 4 n_embd: 128 max_seq_len: 64 } '
               'train { steps: 1 global_batch: 16 seq_len: 64 threads: 1 }',
    "llama-6M": 'model { arch: LLAMA vocab_size: 4096 n_layer: 6 n_head: 8 n_kv_head: 4 n_embd: 256 ffn_hidden: 688 '
                'max_seq_len: 64 } train { steps: 1 global_batch: 8 seq_len: 64 threads: 1 }',
}
LAYOUTS = [  # model, tp, pp, dp, micro_batches, zero_stage, recompute, virtual_stages, sequence_parallel
    ("gpt2-1M", 1, 1, 1, 1, 0, "NONE", 1, 0), ("gpt2-1M", 2, 1, 1, 1, 0, "NONE", 1, 0),
    ("gpt2-1M", 1, 2, 1, 4, 0, "NONE", 1, 0), ("gpt2-1M", 1, 1, 2, 1, 1, "NONE", 1, 0),
    ("gpt2-1M", 2, 2, 1, 2, 0, "NONE", 1, 0), ("gpt2-1M", 2, 1, 1, 1, 0, "NONE", 1, 1),
    ("gpt2-1M", 1, 1, 2, 2, 2, "NONE", 1, 0),
    ("llama-6M", 1, 1, 1, 1, 0, "NONE", 1, 0), ("llama-6M", 1, 2, 1, 2, 0, "FULL", 1, 0),
    ("llama-6M", 1, 1, 2, 1, 1, "NONE", 1, 0), ("llama-6M", 1, 1, 2, 1, 0, "SELECTIVE", 1, 0),
    ("llama-6M", 2, 1, 2, 1, 1, "NONE", 1, 0), ("llama-6M", 1, 2, 1, 2, 0, "NONE", 3, 0),
    ("llama-6M", 1, 2, 2, 2, 2, "NONE", 2, 0),
]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tessera")
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--max-error", type=float, default=0.10)
    a = ap.parse_args()
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_WAIT_POLICY="PASSIVE",
               OMP_NUM_THREADS="1")
    rows, plans = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (model, tp, pp, dp, mb, zero, recompute, v, sp) in enumerate(LAYOUTS):
            job = os.path.join(tmp, model + ".textproto")
            with open(job, "w") as f:
                f.write(f'name: "{model}" {MODELS[model]} data {{ mock: true }}\n')
            ranks = tp * pp * dp
            if (model, ranks) not in plans:
                out = subprocess.run([a.tessera, "plan", "--config", job, "--gpus", str(ranks), "--gpu", "cpu",
                                      "--cpu-gflops", "100", "--top", "1000000", "--json"],
                                     env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"tessera plan failed for {model} on {ranks}:\n{out.stdout}{out.stderr}")
                plans[(model, ranks)] = json.loads(out.stdout)["layouts"]
            key = (tp, pp, dp, mb, zero, recompute, v, sp)
            match = [r for r in plans[(model, ranks)]
                     if (r["tp"], r["pp"], r["dp"], r["micro_batches"], r["zero_stage"], r["recompute"],
                         r["virtual_stages"], int(r["sequence_parallel"])) == key]
            if not match:
                sys.exit(f"tessera plan does not list {model} {key}")
            cmd = [a.mpirun, "--oversubscribe", "-np", str(ranks), a.tessera, "train", "--config", job,
                   "--run-dir", os.path.join(tmp, f"run{i}"), "--set", f"parallel.tp={tp}",
                   "--set", f"parallel.pp={pp}", "--set", f"parallel.dp={dp}", "--set", f"parallel.micro_batches={mb}",
                   "--set", f"parallel.zero_stage={zero}", "--set", f"train.recompute={recompute}",
                   "--set", f"parallel.virtual_stages={v}",
                   "--set", f"parallel.sequence_parallel={'true' if sp else 'false'}"]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            text = out.stdout + out.stderr
            m = re.search(r"peak memory: ([0-9.]+) MiB RSS on rank (\d+)", text)
            if out.returncode != 0 or not m:
                sys.exit(f"train failed for {model} {key}:\n{text}")
            measured = float(m.group(1)) * 2**20
            p = match[0]
            rows.append((model, key, measured, p["memory_bytes"], p["allocated_bytes"]))
    print(f"{'model':9} {'tp pp dp mb zero recompute V SP':32} {'peak RSS MiB':>12} {'predicted MiB':>13} "
          f"{'of it model':>11} {'error':>7}")
    worst = 0.0
    for model, key, measured, predicted, allocated in rows:
        error = (predicted - measured) / measured
        worst = max(worst, abs(error))
        print(f"{model:9} {' '.join(map(str, key)):32} {measured / 2**20:12.1f} {predicted / 2**20:13.1f} "
              f"{allocated / 2**20:11.1f} {100 * error:+6.1f}%")
    print(f"{len(rows)} layouts, worst error {100 * worst:.1f}% (limit {100 * a.max_error:.0f}%)")
    if worst > a.max_error:
        sys.exit(1)

if __name__ == "__main__":
    main()
