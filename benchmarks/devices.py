"""Several devices: sharded EM equals one-device EM, and GPU against CPU time (issue 5).

Two parts, each in its own child process (the device count of a JAX process is fixed
when its backend starts):

1. ``simulated``: ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` makes four CPU
   devices of this machine's cores. :func:`bayes_gmm.fit_map` runs with ``mesh=None``
   (one device) and ``mesh="auto"`` (the rows split over the four; see
   :mod:`bayes_gmm.sharding`) from the same start for the same number of iterations
   (D = 10, K = 10, full, float64 and float32); the largest difference of the
   parameters and of the log likelihood is printed and checked (the two differ only in
   the order of the additions). The times are printed too, but four simulated devices
   share the same cores: they say nothing about scaling.
2. ``gpu``: where ``jax.devices("gpu")`` exists, the time per iteration of ``fit_map`` on
   the GPU for N = 1e7, D = 10, K = 10, full, float32, against the same on the CPU
   (``(best LONG - best SHORT) / (LONG - SHORT)`` iterations, after compile). Where there
   is no GPU the row says so.

Results: ``benchmarks/results/devices.csv`` (appended, with the load average).

Run from the repository root::

    python benchmarks/devices.py            # N = 1e5 simulated; N = 1e7 on a GPU
    python benchmarks/devices.py --quick    # N = 1e4 simulated; N = 1e5 on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS_DIR, append_csv, load, machine, print_table, versions

RESULTS = RESULTS_DIR / "devices.csv"
D, K = 10, 10
N_DEVICES = 4
# float64 sums in another order agree to ~1e-12 relative; float32 to a few 1e-6 after
# the differences are amplified over the iterations.
TOLERANCE = {"float64": 1e-8, "float32": 2e-3}


def _data(n, dtype, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(K, D))
    labels = rng.integers(K, size=n)
    x = centres[labels] + rng.normal(size=(n, D))
    weights = np.full(K, 1.0 / K)
    means = x[rng.choice(n, K, replace=False)]
    covariances = np.stack([np.cov(x.T)] * K)
    return x.astype(dtype), (weights, means, covariances), x


def _per_iteration(fit, short, long, rounds):
    import jax

    def timed(n_iter):
        start = time.perf_counter()
        jax.block_until_ready(fit(n_iter))
        return time.perf_counter() - start

    timed(short), timed(long)  # compile
    best_short = min(timed(short) for _ in range(rounds))
    best_long = min(timed(long) for _ in range(rounds))
    return (best_long - best_short) / (long - short)


def child_simulated(spec):
    import jax

    jax.config.update("jax_enable_x64", True)
    import inspect

    import jax.numpy as jnp
    import numpy as np

    from bayes_gmm import GMMParams, default_prior, fit_map

    if "mesh" not in inspect.signature(fit_map).parameters:
        return [{"part": "simulated", "status": "n/a: fit_map has no mesh argument yet"}]
    rows = []
    for dtype in ("float64", "float32"):
        x, start, x64 = _data(spec["n"], dtype)
        prior = default_prior(x64, K)
        init = GMMParams(*(jnp.asarray(a, dtype) for a in start))
        xj = jnp.asarray(x)
        key = jax.random.key(0)
        results, times = {}, {}
        for label, mesh in (("one", None), ("sharded", "auto")):
            def fit(n_iter, mesh=mesh, key=key, xj=xj, prior=prior, init=init):
                return fit_map(key, xj, prior, init, max_iter=n_iter, tol=-1.0, mesh=mesh)
            results[label] = fit(spec["iters"])
            times[label] = _per_iteration(fit, 1, spec["iters"], spec["rounds"])
        (p1, i1), (p2, i2) = results["one"], results["sharded"]
        param_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                         for a, b in zip(p1, p2, strict=True))
        scale = max(float(np.max(np.abs(np.asarray(a)))) for a in p1)
        ll_diff = abs(float(i1.log_likelihood) - float(i2.log_likelihood))
        rel = ll_diff / abs(float(i1.log_likelihood))
        ok = param_diff / scale <= TOLERANCE[dtype] and rel <= TOLERANCE[dtype]
        rows.append({
            "part": "simulated", "status": "equal" if ok else "DIFFERENT",
            "devices": len(jax.devices()), "dtype": dtype, "n_samples": spec["n"],
            "iters": spec["iters"], "max_param_diff": param_diff,
            "rel_loglik_diff": rel, "one_device_ms": 1e3 * times["one"],
            "sharded_ms": 1e3 * times["sharded"],
        })
    return rows


def child_gpu(spec):
    import jax
    import jax.numpy as jnp

    from bayes_gmm import GMMParams, default_prior, fit_map

    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if not gpus:
        return [{"part": "gpu", "status": "no GPU on this machine"}]
    x, start, _ = _data(spec["n"], "float32")
    prior = default_prior(x[:100_000].astype("float64"), K)
    row = {"part": "gpu", "status": "measured", "devices": 1, "dtype": "float32",
           "n_samples": spec["n"], "iters": spec["iters"], "gpu_name": gpus[0].device_kind}
    for label, device in (("gpu", gpus[0]), ("cpu", jax.devices("cpu")[0])):
        with jax.default_device(device):
            xj = jax.device_put(x, device)
            init = GMMParams(*(jax.device_put(jnp.asarray(a, "float32"), device)
                               for a in start))
            key = jax.random.key(0)

            def fit(n_iter, xj=xj, init=init, key=key):
                return fit_map(key, xj, prior, init, max_iter=n_iter, tol=-1.0)
            row[f"{label}_ms"] = 1e3 * _per_iteration(fit, 1, spec["iters"], spec["rounds"])
    row["cpu_over_gpu"] = row["cpu_ms"] / row["gpu_ms"]
    return [row]


def in_child(part, spec, env):
    cmd = [sys.executable, __file__, "--child", part, json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env},
                          cwd=Path(__file__).parent)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1][:300]
        return [{"part": part, "status": f"failed: {tail}"}]
    return json.loads(done.stdout.strip().splitlines()[-1])


COLUMNS = [
    ("part", "part", "{}"),
    ("status", "status", "{}"),
    ("devices", "devices", "{}"),
    ("dtype", "dtype", "{}"),
    ("n_samples", "N", "{:.0e}"),
    ("max_param_diff", "max param diff", "{:.1e}"),
    ("rel_loglik_diff", "rel ll diff", "{:.1e}"),
    ("one_device_ms", "1 device ms/iter", "{:.1f}"),
    ("sharded_ms", "sharded ms/iter", "{:.1f}"),
    ("gpu_ms", "GPU ms/iter", "{:.2f}"),
    ("cpu_ms", "CPU ms/iter", "{:.1f}"),
    ("cpu_over_gpu", "CPU/GPU", "{:.1f}"),
    ("load_before", "load", "{:.1f}"),
]
FIELDS = [key for key, _, _ in COLUMNS] + ["iters", "gpu_name", "load_after"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N")
    parser.add_argument("--size", type=float, help="N of the simulated check (default 1e5)")
    parser.add_argument("--gpu-size", type=float, help="N of the GPU timing (default 1e7)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-csv", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        part, spec = args.child[0], json.loads(args.child[1])
        rows = child_simulated(spec) if part == "simulated" else child_gpu(spec)
        print(json.dumps(rows))
        return None

    n = int(args.size or (1e4 if args.quick else 1e5))
    n_gpu = int(args.gpu_size or (1e5 if args.quick else 1e7))
    print(f"{machine()}; load average {load():.2f}")
    flags = f"{os.environ.get('XLA_FLAGS', '')} " \
            f"--xla_force_host_platform_device_count={N_DEVICES}".strip()
    rows = []
    for part, spec, env in (
        ("simulated", {"n": n, "iters": 10, "rounds": args.rounds},
         {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}),
        ("gpu", {"n": n_gpu, "iters": 10, "rounds": args.rounds}, {}),
    ):
        before = load()
        for row in in_child(part, spec, env):
            rows.append({**row, "load_before": before, "load_after": load()})
    print_table([{key: row.get(key, "") for key, _, _ in COLUMNS} for row in rows], COLUMNS)
    if not args.no_csv:
        out = [{f: row.get(f, "") for f in FIELDS} for row in rows]
        print(f"appended to {append_csv(out, RESULTS, D=D, K=K, **versions('jax', 'jaxlib'))}")
    return rows


if __name__ == "__main__":
    main()
