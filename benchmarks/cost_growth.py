"""How the cost of one EM iteration grows with N, K and D (issue 5).

:func:`bayes_gmm.fit_map` (full covariances, float32 by default), one factor varied at a
time about N = 1e5, D = 10, K = 10 (N about D = 10, K = 10):

- N in {1e4, 3e4, 1e5, 3e5, 1e6}: expected slope 1 (one pass over the data);
- K in {3, 10, 30, 100}: expected slope about 1 (every point against every component);
- D in {2, 5, 10, 20, 50, 100}: expected slope about 2 (the whitening product is
  D x D per point and component), approached only at large D, where the D^2 products
  outweigh the per-point and per-component work (exp, log, the softmax) that grows as D^0
  or D^1.

Time per iteration as in ``em_grid.py``: (best LONG - best SHORT) / (LONG - SHORT) over
``--rounds``, after compile, from the start of ``em_grid.py`` under its vanishing prior.
The least-squares slope of log time on log size is printed for every factor, over all its
points (``slope``) and over its three largest (``slope, top 3``: the asymptotic rate,
fixed costs aside).

Results: ``benchmarks/results/cost_growth.csv`` (one row per point, then one row per
factor with its slopes) and ``benchmarks/results/cost_growth.png`` (three log-log panels,
the fitted lines and the expected slopes drawn).

Run from the repository root::

    python benchmarks/cost_growth.py            # about two minutes on a quiet 2-core machine
    python benchmarks/cost_growth.py --quick    # about N = 1e4, small values
"""

from __future__ import annotations

import argparse
import math

import jax
import numpy as np
from _common import (
    RESULTS_DIR,
    append_csv,
    load,
    loglog_slope,
    machine,
    print_table,
    timed,
    versions,
)
from em_grid import make_data, ours_runner, start_values, vanishing_prior

RESULTS = RESULTS_DIR / "cost_growth.csv"
PLOT = RESULTS_DIR / "cost_growth.png"
EXPECTED = {"N": 1.0, "K": 1.0, "D": 2.0}


def grids(quick):
    if quick:
        base = {"N": 10_000, "D": 10, "K": 10}
        return base, {"N": [1_000, 3_000, 10_000, 30_000], "K": [3, 10, 30],
                      "D": [2, 5, 10, 20]}
    base = {"N": 100_000, "D": 10, "K": 10}
    return base, {"N": [10_000, 30_000, 100_000, 300_000, 1_000_000], "K": [3, 10, 30, 100],
                  "D": [2, 5, 10, 20, 50, 100]}


def per_iteration(n, d, k, dtype, args):
    x64, means = make_data(n, d, k)
    x = x64.astype(dtype)
    start = start_values(x64, means, "full")
    call, _ = ours_runner(x, start, vanishing_prior(x64, k, "full"), "full")
    # Enough iterations that LONG - SHORT of them take about --min-timed seconds.
    probe = timed(call(args.short + 1)) - timed(call(args.short))
    long = args.short + int(min(args.max_iters, max(args.iters,
                                                   math.ceil(args.min_timed / max(probe, 1e-6)))))
    timed(call(long))  # compile
    best_short = min(timed(call(args.short)) for _ in range(args.rounds))
    best_long = min(timed(call(long)) for _ in range(args.rounds))
    return (best_long - best_short) / (long - args.short), long


def plot(rows, slopes, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, factor in zip(axes, ("N", "K", "D"), strict=True):
        pts = [(r["value"], r["ms_per_iter"]) for r in rows if r["factor"] == factor]
        if not pts:
            continue
        xs, ys = (np.asarray(v, float) for v in zip(*pts, strict=True))
        ax.loglog(xs, ys, "o-", label="measured")
        s = slopes[factor]["slope"]
        fit = np.exp(np.polyval(np.polyfit(np.log(xs), np.log(ys), 1), np.log(xs)))
        ax.loglog(xs, fit, ":", color="C1", label=f"fit: slope {s:.2f}")
        expected = ys[-1] * (xs / xs[-1]) ** EXPECTED[factor]
        ax.loglog(xs, expected, "--", color="0.6", label=f"slope {EXPECTED[factor]:g}")
        ax.set(xlabel=factor, title=f"time per iteration vs {factor}")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("ms per iteration")
    fig.suptitle(f"bayes_gmm EM, full covariances ({machine()})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


COLUMNS = [("factor", "factor", "{}"), ("N", "N", "{:.0e}"), ("D", "D", "{}"),
           ("K", "K", "{}"), ("ms_per_iter", "ms/iter", "{:.3g}"), ("iters", "iters", "{}"),
           ("load_before", "load", "{:.1f}")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 rounds")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--factors", nargs="+", default=["N", "K", "D"], choices=("N", "K", "D"))
    parser.add_argument("--rounds", type=int, help="repetitions, best of (default 3)")
    parser.add_argument("--short", type=int, default=1)
    parser.add_argument("--iters", type=int, default=4, help="LONG - SHORT at least (default 4)")
    parser.add_argument("--max-iters", type=int, default=50)
    parser.add_argument("--min-timed", type=float, default=0.05)
    parser.add_argument("--no-csv", action="store_true")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 3)
    base, values = grids(args.quick)
    print(f"{machine()}; load average {load():.2f}; full covariances, {args.dtype}, "
          f"about {base}, best of {args.rounds}")
    jax.jit(lambda a: a + 1)(np.zeros(1)).block_until_ready()

    rows = []
    for factor in args.factors:
        for value in values[factor]:
            size = {**base, factor: value}
            before = load()
            seconds, long = per_iteration(size["N"], size["D"], size["K"], args.dtype, args)
            rows.append({"factor": factor, "value": value, **size, "dtype": args.dtype,
                         "ms_per_iter": 1e3 * seconds, "iters": long,
                         "load_before": before, "load_after": load()})
            print_table(rows[-1:], COLUMNS, header=len(rows) == 1)

    slopes = {}
    print()
    for factor in args.factors:
        pts = [(r["value"], r["ms_per_iter"]) for r in rows if r["factor"] == factor]
        xs, ys = zip(*pts, strict=True)
        if min(ys) <= 0:
            print(f"{factor}: a non-positive time (timer noise); no slope")
            continue
        slopes[factor] = {"slope": loglog_slope(xs, ys),
                          "slope_top3": loglog_slope(xs[-3:], ys[-3:])}
        print(f"slope in {factor}: {slopes[factor]['slope']:.2f} over {len(xs)} points, "
              f"{slopes[factor]['slope_top3']:.2f} over the largest three "
              f"(expected about {EXPECTED[factor]:g})")
    if not args.no_csv:
        out = [{**r, "slope": "", "slope_top3": "", "expected": ""} for r in rows]
        for factor, s in slopes.items():
            out.append({**{key: "" for key in rows[0]}, "factor": factor,
                        "slope": s["slope"], "slope_top3": s["slope_top3"],
                        "expected": EXPECTED[factor]})
        print(f"appended to {append_csv(out, RESULTS, **versions('jax', 'numpy'))}")
    if not args.no_plot and slopes:
        plot(rows, slopes, PLOT)
        print(f"plot: {PLOT}")
    return rows, slopes


if __name__ == "__main__":
    main()
