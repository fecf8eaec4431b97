"""Simulation-based calibration of the samplers at full size (issue 6): ``make sbc``.

For every cell of K in {2, 3} x covariance type in {full, diag} (D = 2), the Gibbs
sampler goes through :func:`bayes_gmm.validation.sbc` with 500 simulations of N = 50
points, L = 99 draws per simulation (one every 5 transitions after 200 warm-up ones, so
ranks take 100 values and the 10 bins of the chi-square test are exactly equal), and
NUTS (one chain from the MAP, 200 warm-up steps, L = 99 draws thinned by 2) with fewer
simulations (``--nuts-simulations``, default 100, K = 2 and full only by default: each
simulation compiles and runs a NumPyro MCMC of its own).

Written to ``benchmarks/results/``:

- ``sbc.csv``: one row per (sampler, cell, quantity): chi-square, p-value, the
  Bonferroni threshold (``alpha / Q``), pass or fail, and the run's date and machine;
- ``sbc_summary.md``: one line per cell, the verdict and the smallest p-value;
- ``sbc_<sampler>_<type>_k<K>.png``: ECDF-difference plots with 99% simultaneous bands.

Run from the repository root::

    python benchmarks/sbc.py                      # full size (see --help for the sizes)
    python benchmarks/sbc.py --quick              # 100 simulations, Gibbs, K = 2, full
    python benchmarks/sbc.py --nuts-simulations 0 # Gibbs only
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import jax
import pandas as pd

from bayes_gmm import validation

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulations", type=int, default=500)
    parser.add_argument("--n-samples", type=int, default=50)
    parser.add_argument("--components", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--covariance-types", nargs="+", default=["full", "diag"])
    parser.add_argument("--features", type=int, default=2)
    parser.add_argument("--draws", type=int, default=99)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--thinning", type=int, default=5)
    parser.add_argument("--nuts-simulations", type=int, default=100)
    parser.add_argument("--nuts-cells", nargs="+", default=["full:2"],
                        help="type:K cells NUTS runs in (default full:2)")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--quick", action="store_true",
                        help="100 simulations, Gibbs only, K = 2, full (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.simulations, args.components, args.covariance_types = 100, [2], ["full"]
        args.nuts_simulations, args.warmup = 0, 100
    args.out.mkdir(parents=True, exist_ok=True)

    stamp = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "device": str(jax.devices()[0]),
        "x64": bool(jax.config.jax_enable_x64),
        "load_before": os.getloadavg()[0],
    }
    rows, lines = [], []
    key = jax.random.key(args.seed)
    started = time.perf_counter()
    cells = [(t, k) for t in args.covariance_types for k in args.components]
    for cell, (covariance_type, k) in enumerate(cells):
        samplers = [("gibbs", validation.gibbs_sampler(
            args.draws, num_warmup=args.warmup, thinning=args.thinning), args.simulations)]
        if args.nuts_simulations and f"{covariance_type}:{k}" in args.nuts_cells:
            samplers.append(("nuts", validation.nuts_sampler(args.draws, num_warmup=200,
                                                             thinning=2),
                             args.nuts_simulations))
        prior = validation.sbc_prior(k, args.features, covariance_type)
        for index, (name, sampler, n_sims) in enumerate(samplers):
            cell_key = jax.random.fold_in(key, 10 * cell + index)
            result = validation.sbc(
                cell_key, prior, covariance_type=covariance_type, n_samples=args.n_samples,
                num_simulations=n_sims, sampler=sampler, alpha=args.alpha,
                batch_size=min(100, n_sims),
            )
            table = result.table.rename_axis("quantity").reset_index()
            for column, value in {**stamp, "sampler": name, "covariance_type": covariance_type,
                                  "n_components": k, "n_features": args.features,
                                  "n_samples": args.n_samples, "num_simulations": n_sims,
                                  "num_draws": result.num_draws,
                                  "seconds": round(result.settings["seconds"], 1)}.items():
                table[column] = value
            rows.append(table)
            figure = args.out / f"sbc_{name}_{covariance_type}_k{k}.png"
            validation.plot_sbc(result, figure)
            verdict = "PASS" if result.passed else "FAIL"
            line = (f"| {name} | {covariance_type} | {k} | {n_sims} | {result.num_draws} | "
                    f"{verdict} | {result.table['p_value'].min():.3g} | "
                    f"{result.table['threshold'].iloc[0]:.2g} | "
                    f"{result.settings['seconds']:.0f} |")
            lines.append(line)
            print(line, flush=True)
    total = time.perf_counter() - started

    frame = pd.concat(rows, ignore_index=True)
    csv = args.out / "sbc.csv"
    frame.to_csv(csv, mode="a" if csv.exists() else "w", header=not csv.exists(),
                 index=False, float_format="%.6g")
    header = [
        f"# SBC of the samplers ({stamp['date']}, {stamp['machine']}, {stamp['device']}, "
        f"x64={stamp['x64']}, load {stamp['load_before']:.1f} before, {total:.0f} s in all)",
        "",
        f"N = {args.n_samples} points, D = {args.features}; chi-square over 10 bins per "
        f"quantity, Bonferroni over the quantities at alpha = {args.alpha}.",
        "",
        "| sampler | covariance | K | simulations | L | verdict | min p | threshold | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    (args.out / "sbc_summary.md").write_text("\n".join(header + lines) + "\n")
    print(f"wrote {csv} and {args.out / 'sbc_summary.md'} ({total:.0f} s)")
    return 0 if frame["passed"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
