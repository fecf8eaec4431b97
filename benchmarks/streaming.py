"""EM on data larger than memory: peak memory and time per pass from a memmapped file (issue 5).

N = 2e7 points, D = 10, K = 10, float32 (800 MB), written to a temporary ``.npy`` file
(deleted at the end) and fitted from ``numpy.load(path, mmap_mode="r")`` by
:func:`bayes_gmm.fit_map`, which streams a chunked source one chunk at a time, one pass
over the file per EM step (:mod:`bayes_gmm.streaming`). The in-memory fit of the same
mixture on fewer points (``--in-memory-size``, 2e6 by default) is the reference per point.

What is measured, each in its own child process (so that each peak is its own):

- ``stream``: ``fit_map(key, np.load(path, mmap_mode="r"), prior, init, max_iter=n,
  tol=-1)`` for SHORT and LONG passes; time per pass = (best LONG - best SHORT) /
  (LONG - SHORT), after compile (a first, untimed call). ``peak RSS`` is the child's
  VmHWM: the most resident memory it ever held, interpreter, JAX and XLA's compiled code
  included, and the file's pages while mapped (the page cache of a file read through a
  memmap counts as the process's resident memory while mapped; the kernel may drop it).
- ``memory``: the same with ``np.load(path)`` (the whole array read) passed as a JAX
  array: time per pass and peak RSS of the in-memory fit at ``--in-memory-size``.
- ``baseline``: a child that imports JAX and bayes_gmm, compiles one small fit and exits:
  the RSS no fit can go below.

Both fits start from the same values (equal weights, K points of the file as means, the
covariance of the first 1e5 rows) under the default prior of those rows
(:func:`bayes_gmm.default_prior`), and run the same number of passes, never stopping
early. The targets of the issue: peak RSS of ``stream`` under 1.5 GB, and its time per
point within 1.3x of ``memory``'s.

Results: ``benchmarks/results/streaming.csv`` (one row per run, with the load average
before and after).

Run from the repository root::

    python benchmarks/streaming.py            # N = 2e7 (an 800 MB file; a few minutes)
    python benchmarks/streaming.py --quick    # N = 2e5, in-memory 2e5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS_DIR, append_csv, load, machine, print_table, versions

RESULTS = RESULTS_DIR / "streaming.csv"
D, K = 10, 10
SAMPLE = 100_000
BLOCK = 1_000_000
RSS_TARGET_MB = 1.5 * 1024
TIME_TARGET = 1.3


def write_data(path, n_samples, seed=0):
    """The mixture of :mod:`em_grid` (random centres and full covariances), float32,
    written block by block into a ``.npy`` file; never more than one block in memory."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(K, D))
    mixing = rng.normal(scale=0.3, size=(K, D, D)) + np.eye(D)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_samples, D))
    for start in range(0, n_samples, BLOCK):
        rows = min(BLOCK, n_samples - start)
        labels = rng.integers(K, size=rows)
        z = rng.normal(size=(rows, D))
        block = np.empty((rows, D))
        for k in range(K):
            sel = labels == k
            block[sel] = centres[k] + z[sel] @ mixing[k]
        out[start:start + rows] = block
    out.flush()
    del out


# --------------------------------------------------------------------------------------
# The child


def child(spec):
    import jax
    import jax.numpy as jnp

    from bayes_gmm import GMMParams, default_prior, fit_map

    def rss():
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024

    mapped = np.load(spec["path"], mmap_mode="r")
    n = spec["n"]
    sample = np.asarray(mapped[:SAMPLE], np.float64)
    prior = default_prior(sample, K)
    rng = np.random.default_rng(1)
    init = GMMParams(
        jnp.full(K, 1.0 / K, jnp.float32),
        jnp.asarray(sample[rng.choice(len(sample), K, replace=False)], jnp.float32),
        jnp.asarray(np.stack([np.cov(sample.T)] * K), jnp.float32),
    )
    del sample
    key = jax.random.key(0)
    if spec["mode"] == "baseline":
        x = jnp.asarray(mapped[:1000])
        jax.block_until_ready(fit_map(key, x, prior, init, max_iter=2, tol=-1.0))
        return {"peak_rss_mb": rss()[0]}
    if spec["mode"] == "stream":
        source = mapped[:n] if n < len(mapped) else mapped
        kwargs = {"chunk_size": spec["chunk_size"]} if spec["chunk_size"] else {}
    else:
        source = jnp.asarray(np.array(mapped[:n]))
        del mapped
        kwargs = {}

    def run(n_iter):
        start = time.perf_counter()
        params, info = fit_map(key, source, prior, init, max_iter=n_iter, tol=-1.0, **kwargs)
        jax.block_until_ready(params)
        assert int(info.n_iter) == n_iter, (int(info.n_iter), n_iter)
        return time.perf_counter() - start, info

    short, long = spec["short"], spec["long"]
    first, _ = run(short)  # compile, untimed
    times = {"short": [], "long": []}
    for _ in range(spec["rounds"]):
        times["short"].append(run(short)[0])
        t, info = run(long)
        times["long"].append(t)
    per_pass = (min(times["long"]) - min(times["short"])) / (long - short)
    peak, current = rss()
    return {"per_pass_s": per_pass, "first_call_s": first, "peak_rss_mb": peak,
            "rss_end_mb": current, "log_likelihood": float(info.log_likelihood),
            "call_short_s": min(times["short"]), "call_long_s": min(times["long"])}


def in_child(spec):
    """Run :func:`child` in a fresh interpreter; its JSON result and its peak RSS as the
    parent sees it (``ru_maxrss`` of the children, a cross-check of VmHWM)."""
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


COLUMNS = [
    ("mode", "mode", "{}"),
    ("n_samples", "N", "{:.0e}"),
    ("per_pass_s", "s/pass", "{:.3f}"),
    ("ns_per_point", "ns/point", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("first_call_s", "first call s", "{:.1f}"),
    ("load_before", "load", "{:.1f}"),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 2e5, in-memory 2e5")
    parser.add_argument("--size", type=float, help="N of the file (default 2e7)")
    parser.add_argument("--in-memory-size", type=float, help="N in memory (default 2e6)")
    parser.add_argument("--chunk-size", type=int, help="rows per chunk read (default: its own)")
    parser.add_argument("--rounds", type=int, help="repetitions, best of (default 2)")
    parser.add_argument("--passes", type=int, nargs=2, metavar=("SHORT", "LONG"),
                        help="passes of the two timed fits (default 1 3)")
    parser.add_argument("--dir", help="where to write the file (default: a temporary dir)")
    parser.add_argument("--no-csv", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return None

    n = int(args.size or (2e5 if args.quick else 2e7))
    n_memory = int(min(n, args.in_memory_size or (2e5 if args.quick else 2e6)))
    short, long = args.passes or (1, 3)
    rounds = args.rounds or 2
    import bayes_gmm

    streaming = os.path.exists(os.path.join(os.path.dirname(bayes_gmm.__file__), "streaming.py"))
    print(f"{machine()}; load average {load():.2f}; N = {n:.0e}, D = {D}, K = {K}, float32; "
          f"{long} and {short} passes, best of {rounds}; bayes_gmm.streaming "
          f"{'present' if streaming else 'ABSENT: fit_map reads the whole memmap'}")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = os.path.join(tmp, "x.npy")
        t0 = time.perf_counter()
        write_data(path, n)
        print(f"wrote {os.path.getsize(path) / 2**20:.0f} MB in {time.perf_counter() - t0:.1f} s")
        base = {"path": path, "short": short, "long": long, "rounds": rounds,
                "chunk_size": args.chunk_size}
        for mode, size in (("baseline", 1000), ("memory", n_memory), ("stream", n)):
            before = load()
            result = in_child({**base, "mode": mode, "n": size})
            row = {"mode": mode, "n_samples": size, "load_before": before, **result,
                   "load_after": load()}
            if "per_pass_s" in result:
                row["ns_per_point"] = 1e9 * result["per_pass_s"] / size
            rows.append(row)
            if "error" in result:
                print(f"{mode}: failed: {result['error']}")
            print_table(rows[-1:], COLUMNS, header=len(rows) == 1)

    by_mode = {row["mode"]: row for row in rows}
    stream, memory = by_mode["stream"], by_mode["memory"]
    summary = {}
    if "per_pass_s" in stream and "per_pass_s" in memory:
        ratio = stream["ns_per_point"] / memory["ns_per_point"]
        peak = stream["peak_rss_mb"]
        summary = {"stream_over_memory_per_point": ratio, "stream_peak_rss_mb": peak}
        print(f"\nstreaming N = {n:.0e}: {stream['per_pass_s']:.2f} s per pass, "
              f"peak RSS {peak:.0f} MB (target < {RSS_TARGET_MB:.0f}: "
              f"{'met' if peak < RSS_TARGET_MB else 'NOT met'}); per point "
              f"{ratio:.2f}x the in-memory fit at N = {n_memory:.0e} (target <= {TIME_TARGET}: "
              f"{'met' if ratio <= TIME_TARGET else 'NOT met'})")
    if not args.no_csv:
        fields = ["mode", "n_samples", "per_pass_s", "ns_per_point", "peak_rss_mb",
                  "rss_end_mb", "first_call_s", "call_short_s", "call_long_s",
                  "log_likelihood", "error", "load_before", "load_after"]
        out = [{f: row.get(f, "") for f in fields} for row in rows]
        path = append_csv(out, RESULTS, streaming_module=streaming, D=D, K=K, passes=long,
                          **versions("jax", "numpy"))
        print(f"appended to {path}")
    return rows, summary


if __name__ == "__main__":
    main()
