"""The posterior samplers head to head: min-ESS per second of Gibbs and NUTS (issue 3).

Three ways of sampling one posterior, on two data sets, with the same number of chains,
warm-up steps and kept draws for all:

- ``gibbs``: the conjugate blocked Gibbs sampler (:mod:`bayes_gmm.gibbs`), from the MAP;
- ``nuts/map``: NumPyro's NUTS on the labels-summed-out model, every chain from the MAP;
- ``nuts/default``: the same NUTS from NumPyro's default initialisation
  (``init_to_uniform``: every unconstrained coordinate uniform on (-2, 2)).

Data sets: Old Faithful (N = 272, D = 2) with K = 2, and a synthetic mixture with
D = 5, K = 4, N = 10 000 (:data:`SYNTHETIC`: unequal weights, means on the corners of a
regular simplex 4 apart, AR(1)-correlated covariances of different scales). Full
covariances and float64 throughout; the default prior of :class:`bayes_gmm.BayesianGMM`.

Every draw comes from :func:`bayes_gmm.posterior.draw`, the code path of
``BayesianGMM.sample_posterior``: nothing about the samplers is re-implemented here.

What is timed
-------------
Each method is called twice with the same data, shapes and settings: a warm-up call
(key 1), then the timed call (key 2), whose draws are also the ones diagnosed.

- ``sampling s``: the wall-clock time of the timed call of ``draw`` (warm-up *and* kept
  iterations of all chains, the draws copied to the host), minus the time JAX spent
  inside that call tracing, lowering and compiling. That time is measured by JAX itself:
  the spans of its ``/jax/core/compile/*`` monitoring events (jaxpr trace, MLIR
  lowering, XLA compile), merged where they nest or overlap.
- ``compile s``: those compile spans, in the warm-up call for Gibbs and in the timed call
  for NUTS. The Gibbs sampler is one cached ``jax.jit`` (a second call of the same shapes
  compiles nothing; the script checks this), so its timed call is after compile by
  construction. NUTS is not: ``posterior.draw`` builds a new ``numpyro.infer.MCMC`` per
  call, and even reusing one MCMC object does not help in NumPyro 0.22, whose
  ``fori_collect`` wraps its loop body in a fresh ``jax.jit`` on every ``run`` and so
  retraces and recompiles the whole sampling loop each time. Subtracting the measured
  compile spans is therefore the only way to time NUTS after compile without
  re-implementing it; its warm-up call still pays every one-off cost (imports, first
  dispatch of eager operations) so that the timed call does not.

Not timed: the MAP fit (the same for every method), the label alignment and the
diagnostics.

Diagnostics of the timed call's draws, all after aligning every draw to the MAP
(:func:`bayes_gmm.diagnostics.to_datatree`, then
:func:`bayes_gmm.diagnostics.diagnostics_table`): ``min ESS`` is the smallest bulk ESS over
the aligned scalar parameters (weights, means, the upper triangles of the covariances);
``min ESS/s`` is that over ``sampling s``; ``max R-hat`` is the largest rank-normalised
split R-hat over the same parameters, ``R-hat lp`` the R-hat of the log posterior density
(label invariant, so it needs no alignment). ``div.`` counts NUTS's divergent transitions
after warm-up, ``steps`` is NUTS's mean number of leapfrog steps per draw, ``relab.`` the
fraction of draws the alignment relabelled, ``/NUTS(MAP)`` a method's min-ESS/s over
NUTS-from-the-MAP's on the same data.

The issue's expectations are checked and printed at the end: NUTS from the MAP reaches
max R-hat < 1.01 where NUTS from the default initialisation does not; Gibbs reaches at
least 10x NUTS-from-the-MAP's min-ESS/s. Results are appended to
``benchmarks/results/samplers.csv`` with the date, the machine, the library versions and
the load average of the machine around every case (on a shared machine the load says
how far a time can be trusted).

Run from the repository root::

    python benchmarks/samplers.py            # 4 chains, 500 warm-up + 1000 draws each
    python benchmarks/samplers.py --quick    # a smoke run: 50 + 100, synthetic N = 1000
"""

from __future__ import annotations

import argparse
import time
import warnings
from importlib.metadata import version

import jax

# float64 must be switched on before any array exists.
jax.config.update("jax_enable_x64", True)

import jax.monitoring  # noqa: E402
import numpy as np  # noqa: E402
from _common import RESULTS_DIR, append_csv, load, machine, versions  # noqa: E402

from bayes_gmm import BayesianGMM, datasets  # noqa: E402
from bayes_gmm.diagnostics import diagnostics_table, to_datatree  # noqa: E402
from bayes_gmm.posterior import draw  # noqa: E402

RESULTS = RESULTS_DIR / "samplers.csv"
NUM_CHAINS = 4
MAP_SEED = 0
WARM_KEY, TIMED_KEY = 1, 2
# (label, method, init) of every sampler compared.
SAMPLERS = (("gibbs", "gibbs", "map"), ("nuts/map", "nuts", "map"),
            ("nuts/default", "nuts", "default"))
# The events whose spans are compile time (jax._src.dispatch names them).
COMPILE_EVENTS = frozenset({
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
})
R_HAT_TARGET = 1.01
GIBBS_FACTOR = 10.0


def _ar1(rho, scale, d):
    """scale^2 * R with R_ij = rho^|i - j|: correlated, positive definite for |rho| < 1."""
    lags = np.abs(np.subtract.outer(np.arange(d), np.arange(d)))
    return scale**2 * rho**lags


# The synthetic set: D = 5, K = 4. The means are the corners e_k * 4 / sqrt(2) of a
# regular simplex, 4 apart pairwise; the covariances have unit-ish scales and different
# correlations, so the components overlap moderately (the script prints the share of
# points more probable under another component than their own, about 2.5%).
SYNTHETIC = {
    "seed": 0,
    "weights": np.array([0.35, 0.30, 0.20, 0.15]),
    "means": 4.0 / np.sqrt(2.0) * np.eye(4, 5),
    "covariances": np.stack([_ar1(rho, scale, 5) for rho, scale in
                             [(0.5, 1.0), (-0.3, 0.8), (0.3, 1.2), (0.0, 0.7)]]),
}


# --------------------------------------------------------------------------------------
# Data and MAP


def old_faithful():
    return "old_faithful", datasets.old_faithful().to_numpy(), 2, None


def synthetic(n_samples):
    spec = SYNTHETIC
    x, labels = datasets.synthetic_mixture(spec["seed"], n_samples, spec["weights"],
                                           spec["means"], spec["covariances"])
    return "synthetic", x, len(spec["weights"]), labels


def overlap(x, labels):
    """The share of points whose most probable true component is not their own."""
    spec = SYNTHETIC
    log_density = np.stack([
        np.log(w) - 0.5 * np.einsum("nd,de,ne->n", x - m, np.linalg.inv(c), x - m)
        - 0.5 * np.linalg.slogdet(c)[1]
        for w, m, c in zip(spec["weights"], spec["means"], spec["covariances"], strict=True)
    ], axis=1)
    return float(np.mean(np.argmax(log_density, axis=1) != labels))


def fit_map(x, k):
    # Several starts: the MAP is the pivot of the alignment and the start of two of the
    # three samplers, so it must be the global mode, not a split or merged component.
    return BayesianGMM(k, covariance_type="full", n_init=5, max_iter=500,
                       random_state=MAP_SEED).fit(x)


# --------------------------------------------------------------------------------------
# Timing


class CompileClock:
    """Collects the spans of JAX's compile events; :meth:`seconds` merges them in a window.

    Spans nest (tracing an outer function traces the jitted functions it calls) and
    follow each other; their union is the wall-clock time spent compiling.
    """

    def __init__(self):
        self.spans = []
        jax.monitoring.register_event_time_span_listener(self)

    def __call__(self, event, start, end, **kwargs):
        if event in COMPILE_EVENTS:
            self.spans.append((start, end))

    def seconds(self, since, until):
        total, reach = 0.0, since
        for start, end in sorted(self.spans):
            start, end = max(start, reach), min(end, until)
            if end > start:
                total += end - start
                reach = end
        return total


def call_draw(clock, key, x, gmm, method, init, sizes):
    """One call of ``posterior.draw``: its result, wall seconds and compile seconds."""
    # JAX stamps its events with time.time(); the window uses the same clock.
    since = time.time()
    start = time.perf_counter()
    result = draw(jax.random.key(key), x, gmm.prior_, gmm.params_, covariance_type="full",
                  method=method, init=init, num_chains=NUM_CHAINS, **sizes)
    wall = time.perf_counter() - start
    return result, wall, clock.seconds(since, time.time())


def diagnose(x, gmm, method, result):
    tree = to_datatree(result.draws, x=x, prior=gmm.prior_, covariance_type="full",
                       method=method, map_params=gmm.params_, sample_stats=result.sample_stats,
                       attrs=result.attrs, log_likelihood=False)
    table = diagnostics_table(tree)
    params = table[table.index.str.match(r"(weights|means|covariances)\[")]  # aligned only
    stats = result.sample_stats
    return {
        "min_ess_bulk": float(params["ess_bulk"].min()),
        "min_ess_parameter": str(params["ess_bulk"].idxmin()),
        "max_rhat": float(params["r_hat"].max()),
        "max_rhat_parameter": str(params["r_hat"].idxmax()),
        "rhat_lp": float(table.loc["lp", "r_hat"]),
        "ess_lp": float(table.loc["lp", "ess_bulk"]),
        "divergences": table.attrs["n_divergences"],
        "mean_steps": float(np.mean(stats["num_steps"])) if "num_steps" in stats else None,
        "relabelled": float(table.attrs["relabelled_fraction"]),
        "lp_mean": float(tree["sample_stats"]["lp"].mean()),
        "map_lp": float(tree["map"]["lp"]),
    }


def run_case(clock, name, x, k, gmm, sizes, samplers):
    rows = []
    for label, method, init in samplers:
        load_before = load()
        _, warm_wall, warm_compile = call_draw(clock, WARM_KEY, x, gmm, method, init, sizes)
        result, wall, compile_in_call = call_draw(clock, TIMED_KEY, x, gmm, method, init, sizes)
        if method == "gibbs" and compile_in_call > 0.05 * wall:
            warnings.warn(f"the timed Gibbs call compiled for {compile_in_call:.2f} s: its "
                          "cache missed", RuntimeWarning, stacklevel=1)
        sampling = wall - compile_in_call
        row = {
            "dataset": name, "n_samples": x.shape[0], "n_features": x.shape[1],
            "n_components": k, "sampler": label, "num_chains": NUM_CHAINS, **sizes,
            "sampling_s": sampling,
            "compile_s": warm_compile if method == "gibbs" else compile_in_call,
            "timed_call_wall_s": wall, "warm_call_wall_s": warm_wall,
            **diagnose(x, gmm, method, result),
            "load_before": load_before, "load_after": load(),
        }
        row["min_ess_per_s"] = row["min_ess_bulk"] / sampling
        rows.append(row)
        print_table(rows[-1:], header=len(rows) == 1)
    reference = next((r for r in rows if r["sampler"] == "nuts/map"), None)
    for row in rows:
        row["ratio_vs_nuts_map"] = (row["min_ess_per_s"] / reference["min_ess_per_s"]
                                    if reference else None)
    return rows


# --------------------------------------------------------------------------------------
# Output


COLUMNS = [
    ("dataset", "data", "{}"),
    ("sampler", "sampler", "{}"),
    ("sampling_s", "sampling s", "{:.2f}"),
    ("compile_s", "compile s", "{:.2f}"),
    ("min_ess_bulk", "min ESS", "{:.0f}"),
    ("min_ess_per_s", "min ESS/s", "{:.1f}"),
    ("max_rhat", "max R-hat", "{:.3f}"),
    ("rhat_lp", "R-hat lp", "{:.3f}"),
    ("divergences", "div.", "{}"),
    ("mean_steps", "steps", "{:.1f}"),
    ("relabelled", "relab.", "{:.3f}"),
    ("ratio_vs_nuts_map", "/NUTS(MAP)", "{:.1f}"),
    ("min_ess_parameter", "min-ESS parameter", "{}"),
]


def _cell(row, key, fmt):
    value = row.get(key)
    return "-" if value is None else fmt.format(value)


def print_table(rows, header=True):
    cells = [[_cell(row, key, fmt) for key, _, fmt in COLUMNS] for row in rows]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, (_, title, _) in
              enumerate(COLUMNS)]
    if header:
        print("  ".join(t.rjust(w) for (_, t, _), w in zip(COLUMNS, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)), flush=True)


def expectations(rows):
    """The issue's two expectations, per data set, as lines of text."""
    lines = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        by = {r["sampler"]: r for r in rows if r["dataset"] == name}
        if "nuts/map" in by and "nuts/default" in by:
            m, d = by["nuts/map"]["max_rhat"], by["nuts/default"]["max_rhat"]
            holds = m < R_HAT_TARGET <= d
            lines.append(
                f"{name}: NUTS from the MAP max R-hat {m:.3f} "
                f"({'<' if m < R_HAT_TARGET else '>='} {R_HAT_TARGET}), from the default "
                f"initialisation {d:.3f} ({'<' if d < R_HAT_TARGET else '>='} "
                f"{R_HAT_TARGET}): expectation {'holds' if holds else 'does NOT hold'}.")
        if "gibbs" in by and "nuts/map" in by:
            ratio = by["gibbs"]["ratio_vs_nuts_map"]
            lines.append(
                f"{name}: Gibbs / NUTS(MAP) min-ESS/s = {ratio:.1f} (target >= "
                f"{GIBBS_FACTOR:g}): expectation "
                f"{'holds' if ratio >= GIBBS_FACTOR else 'does NOT hold'}.")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 50 warm-up + 100 draws, synthetic N = 1000")
    parser.add_argument("--warmup", type=int, help="warm-up steps per chain (default 500)")
    parser.add_argument("--samples", type=int, help="kept draws per chain (default 1000)")
    parser.add_argument("--n-synthetic", type=int, help="N of the synthetic set (default 10000)")
    parser.add_argument("--datasets", nargs="*", choices=("old_faithful", "synthetic"),
                        default=("old_faithful", "synthetic"))
    parser.add_argument("--samplers", nargs="*", choices=[s[0] for s in SAMPLERS],
                        default=[s[0] for s in SAMPLERS])
    parser.add_argument("--no-csv", action="store_true", help="print only")
    args = parser.parse_args()
    sizes = {"num_warmup": args.warmup or (50 if args.quick else 500),
             "num_samples": args.samples or (100 if args.quick else 1000)}
    n_synthetic = args.n_synthetic or (1000 if args.quick else 10_000)
    samplers = [s for s in SAMPLERS if s[0] in args.samplers]

    clock = CompileClock()
    print(f"{machine()}; jax {jax.__version__}, numpyro {version('numpyro')}; "
          f"{NUM_CHAINS} chains x ({sizes['num_warmup']} warm-up + {sizes['num_samples']} "
          f"draws); float64, full covariances; load average {load():.2f}")
    rows = []
    for name in args.datasets:
        name, x, k, labels = old_faithful() if name == "old_faithful" else synthetic(n_synthetic)
        gmm = fit_map(x, k)
        extra = "" if labels is None else f", overlap {100 * overlap(x, labels):.1f}%"
        print(f"\n{name}: N = {x.shape[0]}, D = {x.shape[1]}, K = {k}{extra}; MAP log "
              f"posterior {gmm.lower_bound_:.2f} after {gmm.n_iter_} EM steps")
        case_rows = run_case(clock, name, x, k, gmm, sizes, samplers)
        if not args.no_csv:  # each data set as soon as it is done: a stopped run keeps it
            append_csv(case_rows, RESULTS, **versions("jax", "numpyro", "arviz_stats", "numpy"))
        rows += case_rows
    print()
    print_table(rows)
    print()
    for line in expectations(rows):
        print(line)
    if not args.no_csv:
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
