"""The whole benchmark suite in one command (``make bench``), and its headline table.

Runs, each in its own process (each sets up JAX its own way) and in this order:

1. ``em_grid.py``: EM per iteration, bayes_gmm / scikit-learn / gmmx over the grid;
2. ``em_vs_sklearn.py``: the headline cell in depth (compile times, the in-cache bound);
3. ``streaming.py``: N = 2e7 from a memmapped file, peak memory and time per pass;
4. ``devices.py``: sharded equals unsharded on simulated devices; GPU against CPU;
5. ``cost_growth.py``: time per iteration against N, K and D, with log-log slopes;
6. ``sweep.py``: a 256-point prior sweep as one compiled call, against scikit-learn fits;
7. ``small_data.py``: Old Faithful and the galaxy velocities, cold / warm-cache / warm
   (import, fit, the 36-model grid, the samplers, a prior sweep), beside scikit-learn and
   R's mclust where ``Rscript`` has it;
8. ``samplers.py``: min-ESS per second of Gibbs and NUTS (from the MAP and by default).

Then it writes ``benchmarks/results/headline.md``: the date, the machine and the numbers
the README's table carries, taken from the rows this run appended. ``--quick`` passes
``--quick`` to every script (a smoke test of a few minutes) and sends their results to a
temporary directory (printed; ``--results DIR`` to keep them), so that smoke runs never
mix with real results; other arguments after ``--`` go to ``em_grid.py``.

Run from the repository root::

    python benchmarks/run_all.py            # everything (see benchmarks/README.md for time)
    python benchmarks/run_all.py --quick
    python benchmarks/run_all.py --only streaming devices
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
from _common import load, machine

HERE = Path(__file__).resolve().parent
SCRIPTS = ("em_grid", "em_vs_sklearn", "streaming", "devices", "cost_growth", "sweep",
           "small_data", "samplers")


def rows_since(name, since):
    """The rows of ``results/<name>*.csv`` stamped at or after ``since``."""
    out = []
    for path in sorted(_common.RESULTS_DIR.glob(f"{name}*.csv")):
        with path.open() as f:
            out += [r for r in csv.DictReader(f) if r.get("date", "") >= since]
    return out


def _num(value, fmt):
    try:
        return fmt.format(float(value))
    except (TypeError, ValueError):
        return value or "n/a"


def headline(since):
    lines = [f"# Benchmark headline, {since[:10]}", "",
             f"Machine: {machine()}. Every time is the best of several repetitions; the "
             "load average at the time is given (2 cores: above 2, times are stretched).", ""]
    grid = [r for r in rows_since("em_grid", since)
            if (r["N"], r["D"], r["K"]) == ("1000000", "10", "10")]
    if grid:
        lines += ["## EM per iteration, N = 1e6, D = 10, K = 10 (`em_grid.py`)", "",
                  "| cov | dtype | bayes_gmm ms | scikit-learn ms | gmmx ms | matmul ms | "
                  "sklearn/ours (>= 10) | gmmx/ours (>= 1.5) | ours/matmul (<= 1.5) | load |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in grid:
            lines.append(
                f"| {r['covariance_type']} | {r['dtype']} | {_num(r['ours_ms'], '{:.1f}')} | "
                f"{_num(r['sklearn_ms'], '{:.0f}')} | {_num(r['gmmx_ms'], '{:.1f}')} | "
                f"{_num(r['matmul_ms'], '{:.1f}')} | {_num(r['sklearn_over_ours'], '{:.1f}')} | "
                f"{_num(r['gmmx_over_ours'], '{:.2f}')} | "
                f"{_num(r['ours_over_matmul'], '{:.2f}')} | {_num(r['load_before'], '{:.1f}')} |")
        lines.append("")
    stream = {r["mode"]: r for r in rows_since("streaming", since)}
    if "stream" in stream and "memory" in stream:
        s, m = stream["stream"], stream["memory"]
        try:
            ratio = f"{float(s['ns_per_point']) / float(m['ns_per_point']):.2f}"
        except ValueError:
            ratio = "n/a"
        lines += ["## Streaming (`streaming.py`)", "",
                  "| N | s per pass | ns per point | peak RSS MB (< 1536) | "
                  "per point / in-memory (<= 1.3) | load |", "|---|---|---|---|---|---|",
                  f"| {_num(s['n_samples'], '{:.0e}')} | {_num(s['per_pass_s'], '{:.2f}')} | "
                  f"{_num(s['ns_per_point'], '{:.1f}')} | {_num(s['peak_rss_mb'], '{:.0f}')} | "
                  f"{ratio} (in memory: N = {_num(m['n_samples'], '{:.0e}')}, "
                  f"{_num(m['ns_per_point'], '{:.1f}')} ns per point) | "
                  f"{_num(s['load_before'], '{:.1f}')} |", ""]
    devices = rows_since("devices", since)
    if devices:
        lines += ["## Devices (`devices.py`)", ""]
        for r in devices:
            if r["part"] == "simulated" and r.get("dtype"):
                lines.append(f"- {r['devices']} simulated CPU devices, {r['dtype']}: "
                             f"{r['status']} (max parameter difference "
                             f"{_num(r['max_param_diff'], '{:.1e}')})")
            elif r["part"] == "gpu" and r.get("gpu_ms"):
                lines.append(f"- GPU ({r['gpu_name']}), N = {_num(r['n_samples'], '{:.0e}')}: "
                             f"{_num(r['gpu_ms'], '{:.2f}')} ms per iteration against "
                             f"{_num(r['cpu_ms'], '{:.1f}')} on the CPU "
                             f"({_num(r['cpu_over_gpu'], '{:.1f}')}x)")
            else:
                lines.append(f"- {r['part']}: {r['status']}")
        lines.append("")
    slopes = [r for r in rows_since("cost_growth", since) if r.get("slope")]
    if slopes:
        lines += ["## Cost growth (`cost_growth.py`)", "",
                  "| factor | slope | slope, largest three | expected |", "|---|---|---|---|"]
        lines += [f"| {r['factor']} | {_num(r['slope'], '{:.2f}')} | "
                  f"{_num(r['slope_top3'], '{:.2f}')} | {r['expected']} |" for r in slopes]
        lines.append("")
    sweep = rows_since("sweep", since)
    if sweep:
        r = sweep[-1]
        lines += ["## Prior sweep, Old Faithful, K = 2 (`sweep.py`)", "",
                  "| points | bayes_gmm fits/s | scikit-learn fits/s | speed-up (>= 50) | "
                  "per EM iteration | compile s | load |", "|---|---|---|---|---|---|---|",
                  f"| {r['n_points']} | {_num(r['ours_total_fits_per_s'], '{:.0f}')} | "
                  f"{_num(r['sklearn_fits_per_s'], '{:.1f}')} | "
                  f"{_num(r['speedup_total'], '{:.0f}')}x | "
                  f"{_num(r['speedup_per_iter'], '{:.0f}')}x | {_num(r['compile_s'], '{:.1f}')} | "
                  f"{_num(r['load_before'], '{:.1f}')} |", ""]
    for name in ("small_data.md", "small_data_quick.md"):  # small_data.py's own table
        path = _common.RESULTS_DIR / name
        if path.exists() and datetime.datetime.fromtimestamp(path.stat().st_mtime).isoformat(
                timespec="seconds") >= since:
            text = path.read_text().strip()
            lines += [f"#{line}" if line.startswith("#") else line
                      for line in text.splitlines()] + [""]
    samplers = rows_since("samplers", since)
    if samplers:
        lines += ["## Samplers (`samplers.py`)", "",
                  "| data | sampler | min ESS/s | / NUTS(MAP) | max R-hat | divergences | load |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['dataset']} | {r['sampler']} | {_num(r['min_ess_per_s'], '{:.1f}')} | "
                  f"{_num(r['ratio_vs_nuts_map'], '{:.1f}')} | {_num(r['max_rhat'], '{:.3f}')} | "
                  f"{r.get('divergences') or 'n/a'} | {_num(r['load_before'], '{:.1f}')} |"
                  for r in samplers]
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every script with --quick")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these")
    parser.add_argument("--results", help="results directory (default benchmarks/results; "
                        "with --quick a temporary one)")
    parser.add_argument("grid_args", nargs="*", help="after --: arguments for em_grid.py")
    args = parser.parse_args()
    results = args.results or (tempfile.mkdtemp(prefix="bench_quick_") if args.quick else None)
    if results:
        os.environ["BENCH_RESULTS_DIR"] = results  # the children read it in _common
        _common.RESULTS_DIR = Path(results)
    since = datetime.datetime.now().isoformat(timespec="seconds")
    print(f"{machine()}; load average {load():.2f}; started {since}")
    failed, started = [], time.perf_counter()
    for name in args.only or SCRIPTS:
        cmd = [sys.executable, str(HERE / f"{name}.py")]
        if args.quick:
            cmd.append("--quick")
        if name == "em_grid":
            cmd += args.grid_args
        print(f"\n=== {name} ({' '.join(cmd[1:])})", flush=True)
        t0 = time.perf_counter()
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
        print(f"=== {name}: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    text = headline(since)
    path = _common.RESULTS_DIR / "headline.md"
    path.write_text(text + "\n")
    print(f"\n{text}\nwritten to {path}; total {(time.perf_counter() - started) / 60:.1f} min")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
