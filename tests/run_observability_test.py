#!/usr/bin/env python3
"""Pictures and traces of real training runs, started as users start them (mpirun, tessera train).

  run_observability_test.py plot  TESSERA MPIEXEC
      RUN_DIR/plot.svg written at the end of a pp=2 run is valid XML whose polylines hold one point per
      metrics.jsonl row that has the value, in the data's order; `tessera plot` draws the same file; a missing
      run directory is a usage error (exit 2).
  run_observability_test.py trace TESSERA MPIEXEC
      `train --trace-steps 2:3` at pp=2 (2 micro-batches) and at tp=2 x dp=2 writes trace/rank_N.json and the merged
      trace/trace.json: valid JSON, one process per rank with its name, forward and backward events per
      micro-batch and stage, pipeline sends and receives, TP all-reduces, DP bucket collectives, the optimizer,
      data loading, the checkpoint save, only steps 2 and 3, durations >= 0, events on one thread nested;
      without the flag no trace/ directory.
Prints PASS at the end; exits non-zero on the first failure.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

JOB = """
model { vocab_size: 64 n_layer: 2 n_head: 2 n_embd: 16 max_seq_len: 16 }
train { steps: %d global_batch: 8 seq_len: 16 threads: 1 }
optimizer { lr: 1e-2 warmup_steps: 2 }
data { mock: true }
checkpoint { every_steps: 3 }
logging { log_every: 1 eval_every: 3 eval_batches: 1 }
"""
SVG = "{http://www.w3.org/2000/svg}"


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def run(command, expect=0):
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if expect is not None and result.returncode != expect:
        fail("%s exited %d (expected %d):\n%s" % (" ".join(command), result.returncode, expect, result.stdout))
    return result


def train(tessera, mpiexec, work, ranks, steps, run_dir, *extra, expect=0):
    job = os.path.join(work, "job.textproto")
    with open(job, "w") as f:
        f.write(JOB % steps)
    return run([mpiexec, "--oversubscribe", "-np", str(ranks), tessera, "train", "--config", job, "--run-dir", run_dir]
               + list(extra), expect=expect)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def polylines(svg_path):
    root = ET.parse(svg_path).getroot()  # raises on malformed XML
    if root.tag != SVG + "svg":
        fail("%s: root element %s, not svg" % (svg_path, root.tag))
    lines = {}
    for line in root.iter(SVG + "polyline"):
        points = [tuple(float(v) for v in p.split(",")) for p in line.get("points").split()]
        lines[line.get("data-series")] = points
    return lines


def check_plot(tessera, mpiexec, work):
    run_dir = os.path.join(work, "run")
    train(tessera, mpiexec, work, 2, 7, run_dir, "--set", "parallel.pp=2", "--set", "parallel.micro_batches=2")
    rows = metrics(run_dir)
    if len(rows) != 7:
        fail("metrics.jsonl has %d rows, expected 7" % len(rows))
    svg = os.path.join(run_dir, "plot.svg")
    if not os.path.isfile(svg):
        fail("train wrote no plot.svg")
    lines = polylines(svg)
    for key in ("loss", "val_loss", "lr", "tokens_per_s"):
        have = [r for r in rows if isinstance(r.get(key), (int, float))]
        points = lines.get(key)
        if points is None:
            fail("plot.svg has no polyline for %s" % key)
        if len(points) != len(have):
            fail("polyline %s has %d points, metrics.jsonl %d values" % (key, len(points), len(have)))
        xs = [p[0] for p in points]
        if xs != sorted(xs) or len(set(xs)) != len(xs):
            fail("polyline %s: x not increasing with step: %s" % (key, xs))
        # A larger value is drawn higher (smaller y): the points are the data, in order.
        for (a, pa) in zip(have, points):
            for (b, pb) in zip(have, points):
                if a[key] > b[key] * (1 + 1e-6) + 1e-12 and not pa[1] < pb[1]:
                    fail("polyline %s: %s=%g drawn at y %g, not above %g at y %g" % (key, key, a[key], pa[1], b[key],
                                                                                     pb[1]))
    if len(lines["val_loss"]) != 3:  # eval_every 3 over 7 steps: 3, 6 and the last
        fail("val_loss has %d points, expected 3" % len(lines["val_loss"]))
    # The command draws the same picture.
    again = os.path.join(work, "again.svg")
    out = run([tessera, "plot", run_dir, "--out", again]).stdout
    if "7 step(s)" not in out:
        fail("tessera plot printed: " + out)
    with open(svg) as a, open(again) as b:
        if a.read() != b.read():
            fail("tessera plot drew a different picture from the one train wrote")
    missing = run([tessera, "plot", os.path.join(work, "nothing")], expect=2).stdout
    if "metrics.jsonl" not in missing:
        fail("tessera plot of a missing run: " + missing)
    run([tessera, "plot"], expect=2)


def check_trace_run(tessera, mpiexec, work, name, ranks, sets, pp, micro_batches):
    run_dir = os.path.join(work, name)
    extra = []
    for s in sets:
        extra += ["--set", s]
    train(tessera, mpiexec, work, ranks, 5, run_dir, "--trace-steps", "2:3", *extra)
    trace_dir = os.path.join(run_dir, "trace")
    for r in range(ranks):
        with open(os.path.join(trace_dir, "rank_%d.json" % r)) as f:
            json.load(f)
    with open(os.path.join(trace_dir, "trace.json")) as f:
        trace = json.load(f)
    events = trace["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e["name"] == "process_name"}
    if sorted(names) != list(range(ranks)):
        fail("%s: processes %s, expected one per rank 0..%d" % (name, sorted(names), ranks - 1))
    for pid, label in names.items():
        if not label.startswith("rank %d (" % pid):
            fail("%s: process %d is named '%s'" % (name, pid, label))
    complete = [e for e in events if e.get("ph") == "X"]
    pids = {e["pid"] for e in complete}
    if pids != set(range(ranks)):
        fail("%s: events from processes %s" % (name, sorted(pids)))
    for e in complete:
        if not (isinstance(e["ts"], (int, float)) and isinstance(e["dur"], (int, float)) and e["dur"] >= 0
                and e["ts"] >= 0 and math.isfinite(e["ts"])):
            fail("%s: bad ts/dur in %s" % (name, e))
        step = e.get("args", {}).get("step")
        if step not in (2, 3):
            fail("%s: event outside the traced steps 2:3: %s" % (name, e))
    # Events on one thread nest (a viewer draws them as a stack): each starts after the previous one ended or
    # lies inside it.
    by_thread = {}
    for e in complete:
        by_thread.setdefault((e["pid"], e["tid"]), []).append(e)
    for thread, spans in by_thread.items():
        stack = []
        for e in sorted(spans, key=lambda e: (e["ts"], -e["dur"])):
            while stack and e["ts"] >= stack[-1]["ts"] + stack[-1]["dur"]:
                stack.pop()
            if stack and e["ts"] + e["dur"] > stack[-1]["ts"] + stack[-1]["dur"]:
                fail("%s: thread %s: %s overlaps %s without nesting" % (name, thread, e, stack[-1]))
            stack.append(e)
    for step in (2, 3):
        for pid in range(ranks):
            mine = [e for e in complete if e["pid"] == pid and e["args"]["step"] == step]
            stage = pid if pp > 1 else 0
            for kind in ("forward", "backward"):
                got = sorted(e["args"]["micro_batch"] for e in mine if e["cat"] == kind)
                if got != list(range(micro_batches)):
                    fail("%s: rank %d step %d: %s of micro-batches %s, expected %s" %
                         (name, pid, step, kind, got, list(range(micro_batches))))
                for e in mine:
                    if e["cat"] == kind and "layers" not in e["args"]:
                        fail("%s: %s without its layer range: %s" % (name, kind, e))
            if not any(e["name"] == "optimizer" for e in mine):
                fail("%s: rank %d step %d has no optimizer event" % (name, pid, step))
            if not any(e["cat"] == "data" for e in mine) and (pp == 1 or stage in (0, pp - 1)):
                fail("%s: rank %d step %d has no data loading event" % (name, pid, step))
            if pp > 1:
                sends = [e for e in mine if e["cat"] == "pp" and e["name"].startswith("send")]
                recvs = [e for e in mine if e["cat"] == "pp" and e["name"].startswith("recv")]
                # Stage 0 sends activations and receives gradients; the last stage the reverse.
                if len(sends) < micro_batches or len(recvs) < micro_batches:
                    fail("%s: rank %d step %d: %d sends, %d receives on the pipeline, expected >= %d each" %
                         (name, pid, step, len(sends), len(recvs), micro_batches))
    if pp == 1:
        for pid in range(ranks):
            for cat, what in (("tp", "tensor-parallel all-reduce"), ("dp", "DP bucket collective")):
                if not any(e["cat"] == cat and e["pid"] == pid for e in complete):
                    fail("%s: rank %d has no %s in the trace" % (name, pid, what))
        in_flight = [e for e in events if e.get("ph") in ("b", "e") and e["cat"] == "dp"]
        if not in_flight or len(in_flight) % 2:
            fail("%s: DP buckets in flight as %d async events" % (name, len(in_flight)))
    if not any(e["cat"] == "checkpoint" for e in complete):
        fail("%s: no checkpoint write in the trace (checkpoint.every_steps 3)" % name)
    threads = {(e["pid"], e["args"]["name"]) for e in events if e.get("ph") == "M" and e["name"] == "thread_name"}
    if not any(t[1] == "compute" for t in threads) or not any(t[1].startswith("comm") for t in threads):
        fail("%s: threads %s lack compute and communication tracks" % (name, sorted(threads)))


def check_trace(tessera, mpiexec, work):
    check_trace_run(tessera, mpiexec, work, "pp2", 2, ["parallel.pp=2", "parallel.micro_batches=2"], 2, 2)
    check_trace_run(tessera, mpiexec, work, "tp2dp2", 4, ["parallel.tp=2", "parallel.dp=2"], 1, 1)
    # Off by default.
    plain = os.path.join(work, "plain")
    train(tessera, mpiexec, work, 2, 3, plain, "--set", "parallel.dp=2")
    if os.path.exists(os.path.join(plain, "trace")):
        fail("a run without --trace-steps made a trace/ directory")
    for value in ("3:2", "0:1", "2", "a:b"):
        bad = train(tessera, mpiexec, work, 1, 3, os.path.join(work, "bad"), "--trace-steps", value, expect=2)
        if "trace_steps" not in bad.stdout:
            fail("--trace-steps %s: %s" % (value, bad.stdout))


def main():
    mode, tessera, mpiexec = sys.argv[1:4]
    with tempfile.TemporaryDirectory() as work:
        {"plot": check_plot, "trace": check_trace}[mode](tessera, mpiexec, work)
    print("PASS")


if __name__ == "__main__":
    main()
