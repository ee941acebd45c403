#!/usr/bin/python3
"""Measures CPU layouts of one job with `tessera bench` under mpirun and compares them with `tessera plan`:
Spearman's rank correlation of predicted and measured step times, and the predicted memory per rank (the
model's allocations and the CPU runtime: process, MPI, threads; docs/planner.md "Memory model") against each
rank's peak RSS (GNU time's %M; bench saves no checkpoint, so it lacks part of the rank's rest). The step-time
numbers in docs/planner.md come from this script; the memory comparison is scripts/plan_memory_check.py's.

usage: scripts/plan_cpu_ranking.py BUILD_DIR [--shape tiny] [--ranks 2] [--steps 4] [--levers]
"""
import argparse, json, os, re, subprocess, sys, tempfile

LAYOUTS = [  # tp, pp, dp, micro_batches, zero_stage, virtual_stages, sequence_parallel
    (2, 1, 1, 1, 0, 1, 0), (2, 1, 1, 4, 0, 1, 0), (1, 2, 1, 1, 0, 1, 0), (1, 2, 1, 2, 0, 1, 0), (1, 2, 1, 8, 0, 1, 0),
    (1, 1, 2, 1, 0, 1, 0), (1, 1, 2, 4, 0, 1, 0), (1, 1, 2, 1, 1, 1, 0), (1, 1, 2, 8, 1, 1, 0),
]
LEVERS = [  # --levers adds sequence parallelism, interleaved 1F1B and ZeRO-2
    (2, 1, 1, 1, 0, 1, 1), (2, 1, 1, 4, 0, 1, 1), (1, 2, 1, 2, 0, 2, 0), (1, 2, 1, 8, 0, 2, 0),
    (1, 2, 1, 8, 0, 3, 0), (1, 1, 2, 1, 2, 1, 0), (1, 1, 2, 8, 2, 1, 0),
]

def spearman(a, b):
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return r
    ra, rb = ranks(a), ranks(b)
    m = (len(a) + 1) / 2
    cov = sum((x - m) * (y - m) for x, y in zip(ra, rb))
    va = sum((x - m) ** 2 for x in ra)
    vb = sum((y - m) ** 2 for y in rb)
    return cov / (va * vb) ** 0.5

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--shape", default="tiny")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--levers", action="store_true",
                    help="also measure sequence-parallel, interleaved (virtual_stages) and ZeRO-2 layouts")
    a = ap.parse_args()
    tessera = os.path.join(a.build, "tessera")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_WAIT_POLICY="PASSIVE")
    # The bench shape as a config for the planner (the tiny shapes of launcher/commands/bench_command.cc).
    arch, kv, ffn = ("LLAMA", "n_kv_head: 2 ffn_hidden: 352", "") if a.shape == "llama-tiny" else ("GPT2", "", "")
    config = (f'name: "bench-{a.shape}" model {{ arch: {arch} vocab_size: 2048 n_layer: 4 n_head: 4 n_embd: 128 '
              f'max_seq_len: 128 {kv} }} train {{ steps: 1 global_batch: 16 seq_len: 128 }} data {{ mock: true }}')
    with tempfile.NamedTemporaryFile("w", suffix=".textproto", delete=False) as f:
        f.write(config)
    plan = json.loads(subprocess.run([tessera, "plan", "--config", f.name, "--gpus", str(a.ranks), "--gpu", "cpu",
                                      "--top", "100000", "--json"], check=True, capture_output=True, text=True).stdout)
    # bench recomputes nothing; the plan has a row per recompute option, virtual stage count and SP setting.
    predicted = {(r["tp"], r["pp"], r["dp"], r["micro_batches"], r["zero_stage"], r["virtual_stages"],
                  int(r["sequence_parallel"])): r for r in plan["layouts"] if r["recompute"] == "NONE"}
    rows = []
    for layout in LAYOUTS + (LEVERS if a.levers else []):
        tp, pp, dp, mb, zero, v, sp = layout
        if tp * pp * dp != a.ranks or layout not in predicted:
            continue
        cmd = ["mpirun", "--oversubscribe", "-np", str(a.ranks), "/usr/bin/time", "-f", "rss_kb %M", tessera, "bench",
               "--shape", a.shape, "--steps", str(a.steps), "--set", f"parallel.tp={tp}", "--set", f"parallel.pp={pp}",
               "--set", f"parallel.dp={dp}", "--set", f"parallel.micro_batches={mb}",
               "--set", f"parallel.zero_stage={zero}", "--set", f"parallel.virtual_stages={v}",
               "--set", f"parallel.sequence_parallel={'true' if sp else 'false'}"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        text = out.stdout + out.stderr
        m = re.search(r"step time median ([0-9.]+) ms", text)
        if out.returncode != 0 or not m:
            sys.exit(f"bench failed for {layout}:\n{text}")
        rss_kb = re.findall(r"rss_kb (\d+)", text)
        if not rss_kb:
            sys.exit(f"no peak RSS from /usr/bin/time for {layout}:\n{text}")
        rss = max(int(x) for x in rss_kb) * 1024
        p = predicted[layout]
        rows.append((layout, float(m.group(1)), p["step_s"] * 1e3, rss, p["memory_bytes"]))
    print(f"{'tp pp dp mb zero V SP':22} {'measured ms':>11} {'predicted ms':>12} {'peak RSS MB':>11} {'predicted MB':>12}")
    for layout, measured, pred, rss, mem in rows:
        print(f"{' '.join(map(str, layout)):22} {measured:11.1f} {pred:12.1f} {rss / 1e6:11.1f} {mem / 1e6:12.1f}")
    rho = spearman([r[1] for r in rows], [r[2] for r in rows])
    print(f"Spearman rank correlation of predicted and measured step times over {len(rows)} layouts: {rho:.3f}")

if __name__ == "__main__":
    main()
