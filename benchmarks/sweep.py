"""A 256-point prior sweep as one compiled call, against a loop of scikit-learn fits.

Old Faithful (N = 272, D = 2), K = 2, full covariances, float64. The grid crosses four
values of each of the four hyperparameters (256 points): ``weight_concentration_prior``
in 0.1..10, ``mean_precision_prior`` in 0.01..10, ``degrees_of_freedom_prior`` in
4..20 and ``covariance_prior_scale`` in 0.25..4, all geometric.

- ours: :func:`bayes_gmm.sensitivity.prior_sweep`, every fit from one k-means++ start,
  the 256 EM loops ``vmap``-ed under one ``jax.jit`` (one compiled call). Timed twice:
  ``core``, the compiled call alone (:func:`bayes_gmm.sensitivity.sweep_fits`), and
  ``total``, the whole function (start, call, label alignment, the Dataset).
- scikit-learn: a Python loop of 256 ``BayesianGaussianMixture`` fits, one per grid
  point, with the same hyperparameters (``weight_concentration_prior_type=
  "dirichlet_distribution"``, ``mean_prior`` and ``covariance_prior`` from our base prior
  times the scale), ``init_params="k-means++"`` (seeding only, like ours), one start
  each. Why this one rather than ``GaussianMixture``: it is scikit-learn's only mixture
  that takes these four hyperparameters, so it is what a scikit-learn user runs for a
  prior sweep. It is not the same algorithm: it maximises a variational lower bound, not
  the posterior density, and its per-iteration cost (digamma terms, Wishart
  expectations) is a little above a MAP EM step; ``GaussianMixture`` would have no prior
  to sweep at all. Iterations are reported beside the times so that fits per second can
  be read per iteration too (``per iter``: the speedup in time per EM iteration).
- Same ``max_iter`` (100). Tolerances differ in kind: ours stops when the relative
  change of the log posterior is below 1e-6; scikit-learn when the absolute change of
  its lower bound is below ``tol``. ``1e-6 * |log posterior|`` is about 1e-3 here, so
  scikit-learn runs with ``tol=1e-3``, its default.
- ``compile s``: the first call of the core minus a warm call (JAX's caches cleared).

Every time is the best of ``--rounds`` repetitions (scikit-learn: one loop per round,
with its BLAS limited to one thread, as the data are tiny). The machine is shared: the
one-minute load average before and after is printed and stored with the results in
``benchmarks/results/sweep.csv``.

Run from the repository root::

    python benchmarks/sweep.py              # 256 points, best of 3
    python benchmarks/sweep.py --rounds 1   # quicker
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from _common import RESULTS_DIR, append_csv, load, machine, print_table, timed  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.mixture import BayesianGaussianMixture  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bayes_gmm import default_prior, fit_map  # noqa: E402
from bayes_gmm.datasets import old_faithful  # noqa: E402
from bayes_gmm.sensitivity import (  # noqa: E402
    _points,
    _stack_hyperparameters,
    check_grid,
    point_prior,
    prior_sweep,
    sweep_fits,
)

K = 2
MAX_ITER = 100
TOL_OURS = 1e-6
TOL_SKLEARN = 1e-3
GRID = {
    "weight_concentration_prior": np.geomspace(0.1, 10.0, 4),
    "mean_precision_prior": np.geomspace(0.01, 10.0, 4),
    "degrees_of_freedom_prior": np.geomspace(4.0, 20.0, 4),
    "covariance_prior_scale": np.geomspace(0.25, 4.0, 4),
}
RESULTS = RESULTS_DIR / "sweep.csv"
COLUMNS = [
    ("n_points", "points", "{}"),
    ("compile_s", "compile s", "{:.2f}"),
    ("ours_core_s", "ours core s", "{:.4f}"),
    ("ours_core_fits_per_s", "fits/s", "{:.0f}"),
    ("ours_total_s", "ours total s", "{:.4f}"),
    ("ours_total_fits_per_s", "fits/s", "{:.0f}"),
    ("sklearn_s", "sklearn s", "{:.3f}"),
    ("sklearn_fits_per_s", "fits/s", "{:.0f}"),
    ("speedup_core", "speedup core", "{:.1f}x"),
    ("speedup_total", "speedup total", "{:.1f}x"),
    ("ours_mean_iter", "ours iter", "{:.1f}"),
    ("sklearn_mean_iter", "sklearn iter", "{:.1f}"),
    ("speedup_per_iter", "per iter", "{:.1f}x"),
    ("load_before", "load before", "{:.2f}"),
    ("load_after", "load after", "{:.2f}"),
]


def sklearn_loop(x, prior, points):
    """One BayesianGaussianMixture fit per grid point; returns the mean iterations."""
    n_iter = []
    n_points = len(next(iter(points.values())))
    for i in range(n_points):
        p = point_prior(prior, **{name: v[i] for name, v in points.items()})
        model = BayesianGaussianMixture(
            n_components=K, covariance_type="full",
            weight_concentration_prior_type="dirichlet_distribution",
            weight_concentration_prior=float(p.weight_concentration[0]),
            mean_precision_prior=float(p.mean_precision), mean_prior=p.mean,
            degrees_of_freedom_prior=float(p.degrees_of_freedom),
            covariance_prior=p.covariance, max_iter=MAX_ITER, tol=TOL_SKLEARN,
            init_params="k-means++", n_init=1, random_state=i,
        )
        model.fit(x)
        n_iter.append(model.n_iter_)
    return float(np.mean(n_iter))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="repetitions, best of")
    parser.add_argument("--no-csv", action="store_true", help="print only")
    parser.add_argument("--quick", action="store_true", help="one round (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    x = old_faithful().to_numpy(np.float64)
    prior = default_prior(x, K)
    xj = jnp.asarray(x)
    start, _ = fit_map(jax.random.key(0), xj, prior, max_iter=0)
    values = check_grid(GRID, x.shape[1])
    points, _ = _points(values, "cross")
    n_points = len(next(iter(points.values())))
    hyper = _stack_hyperparameters(prior, points, xj.dtype)
    load_before = load()
    print(f"{machine()}; jax {jax.__version__}, scikit-learn {sklearn.__version__}; "
          f"Old Faithful N = {x.shape[0]}, K = {K}, full, float64, {n_points} points, "
          f"best of {args.rounds}; load {load_before:.2f}")

    def core():
        return sweep_fits(xj, prior, start, hyper, TOL_OURS, max_iter=MAX_ITER)

    def total():
        return prior_sweep(x, prior, GRID, init_params=start, max_iter=MAX_ITER,
                           tol=TOL_OURS).weights.values

    compile_s = float("inf")
    for _ in range(2):
        jax.clear_caches()
        first = timed(core)
        compile_s = min(compile_s, first - timed(core))
    _, info = core()
    ours_iter = float(np.mean(np.asarray(info.n_iter)[:-1]))
    timed(total)

    times = {"core": [], "total": [], "sklearn": []}
    sklearn_iter = None
    for _ in range(args.rounds):
        times["core"].append(timed(core))
        times["total"].append(timed(total))
        with threadpool_limits(1):
            start_time = time.perf_counter()
            sklearn_iter = sklearn_loop(x, prior, points)
            times["sklearn"].append(time.perf_counter() - start_time)
    best = {k: min(v) for k, v in times.items()}
    row = {
        "n_points": n_points,
        "n_samples": x.shape[0],
        "max_iter": MAX_ITER,
        "tol_ours": TOL_OURS,
        "tol_sklearn": TOL_SKLEARN,
        "compile_s": compile_s,
        "ours_core_s": best["core"],
        "ours_core_fits_per_s": n_points / best["core"],
        "ours_total_s": best["total"],
        "ours_total_fits_per_s": n_points / best["total"],
        "sklearn_s": best["sklearn"],
        "sklearn_fits_per_s": n_points / best["sklearn"],
        "speedup_core": best["sklearn"] / best["core"],
        "speedup_total": best["sklearn"] / best["total"],
        "ours_mean_iter": ours_iter,
        "sklearn_mean_iter": sklearn_iter,
        "speedup_per_iter": (best["sklearn"] / sklearn_iter) / (best["core"] / ours_iter),
        "load_before": load_before,
        "load_after": load(),
    }
    print_table([row], COLUMNS)
    if not args.no_csv:
        path = append_csv([row], RESULTS, jax=jax.__version__, sklearn=sklearn.__version__,
                          numpy=np.__version__, rounds=args.rounds)
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
