"""Simulation-based calibration of the samplers at full size (issue 6): ``make sbc``.

Both samplers, in every cell of K in {2, 3} x covariance type in {full, diag} (D = 2), go
through :func:`bayes_gmm.validation.sbc` with 500 simulations of N = 50 points and
L = 99 draws per simulation (ranks take 100 values, so the 10 bins of the chi-square test
are exactly equal):

- Gibbs: one chain from the MAP, 200 warm-up transitions, a draw every 5 after them;
- NUTS: one chain from the MAP, 200 warm-up (adaptation) transitions, a draw every 2
  after them.

Each sampler runs vectorised over the simulations (``vmap``, batches of 100 for Gibbs and
10 for NUTS) and compiles once per cell. On a quiet 2-core machine the whole run is
estimated at about 10 minutes (benchmarks/README.md has the measurement behind it).

Written to ``benchmarks/results/``:

- ``sbc.csv``: one row per (sampler, cell, quantity): chi-square, p-value, the
  Bonferroni threshold (``alpha / Q``), pass or fail, and the run's date and machine;
- ``sbc_summary.md``: one line per cell, the verdict and the smallest p-value;
- ``sbc_<sampler>_<type>_k<K>.png``: ECDF-difference plots with 99% simultaneous bands.

Run from the repository root::

    python benchmarks/sbc.py                      # full size (see --help for the sizes)
    python benchmarks/sbc.py --quick              # 100 simulations, both samplers, K = 2, full
    python benchmarks/sbc.py --samplers gibbs     # Gibbs only
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
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults: both samplers, 500 simulations each in all four cells (full and "
               "diag, K = 2 and 3, D = 2), N = 50, L = 99; about 10 minutes on a 2-core "
               "machine.",
    )
    parser.add_argument("--samplers", nargs="+", choices=["gibbs", "nuts"],
                        default=["gibbs", "nuts"], help="default: both")
    parser.add_argument("--simulations", type=int, default=500,
                        help="simulations per sampler and cell (default 500)")
    parser.add_argument("--n-samples", type=int, default=50, help="N (default 50)")
    parser.add_argument("--components", type=int, nargs="+", default=[2, 3],
                        help="K (default 2 3)")
    parser.add_argument("--covariance-types", nargs="+", default=["full", "diag"],
                        help="default: full diag")
    parser.add_argument("--features", type=int, default=2, help="D (default 2)")
    parser.add_argument("--draws", type=int, default=99,
                        help="L, kept draws per simulation, both samplers (default 99)")
    parser.add_argument("--warmup", type=int, default=200,
                        help="Gibbs warm-up transitions (default 200)")
    parser.add_argument("--thinning", type=int, default=5,
                        help="Gibbs: a draw kept every THINNING transitions (default 5)")
    parser.add_argument("--nuts-warmup", type=int, default=200,
                        help="NUTS warm-up (adaptation) transitions (default 200)")
    parser.add_argument("--nuts-thinning", type=int, default=2,
                        help="NUTS: a draw kept every NUTS_THINNING transitions (default 2)")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--quick", action="store_true",
                        help="100 simulations, both samplers, K = 2, full, 100 warm-up "
                             "transitions each (a smoke run, about 1.5 minutes)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.simulations, args.components, args.covariance_types = 100, [2], ["full"]
        args.warmup = args.nuts_warmup = 100
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
    samplers = {  # both vectorised over simulations: one compilation per sampler and cell
        "gibbs": validation.gibbs_sampler(args.draws, num_warmup=args.warmup,
                                          thinning=args.thinning),
        "nuts": validation.nuts_sampler(args.draws, num_warmup=args.nuts_warmup,
                                        thinning=args.nuts_thinning),
    }
    cells = [(t, k) for t in args.covariance_types for k in args.components]
    for cell, (covariance_type, k) in enumerate(cells):
        prior = validation.sbc_prior(k, args.features, covariance_type)
        for index, (name, sampler) in enumerate(samplers.items()):
            if name not in args.samplers:
                continue
            cell_key = jax.random.fold_in(key, 10 * cell + index)
            n_sims = args.simulations
            result = validation.sbc(
                cell_key, prior, covariance_type=covariance_type, n_samples=args.n_samples,
                num_simulations=n_sims, sampler=sampler, alpha=args.alpha,
            )
            table = result.table.rename_axis("quantity").reset_index()
            for column, value in {**stamp, "sampler": name, "covariance_type": covariance_type,
                                  "n_components": k, "n_features": args.features,
                                  "n_samples": args.n_samples, "num_simulations": n_sims,
                                  "num_draws": result.num_draws,
                                  "settings": result.settings["sampler"],
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
        f"quantity, Bonferroni over the quantities at alpha = {args.alpha}. "
        + "; ".join(samplers[name].label for name in samplers if name in args.samplers)
        + ".",
        "",
        "| sampler | covariance | K | simulations | L | verdict | min p | threshold | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    (args.out / "sbc_summary.md").write_text("\n".join(header + lines) + "\n")
    print(f"wrote {csv} and {args.out / 'sbc_summary.md'} ({total:.0f} s)")
    return 0 if frame["passed"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
