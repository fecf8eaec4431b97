"""Prior sensitivity: how much the answer moves when the hyperparameters move.

Two questions, two tools.

*MAP level: refit over a grid.* :func:`prior_sweep` fits the MAP estimate for every
point of a grid of hyperparameters (any of scikit-learn's
``weight_concentration_prior``, ``mean_precision_prior``, ``degrees_of_freedom_prior``,
and ``covariance_prior_scale``, a factor on the base prior's ``covariance_prior``),
crossed or zipped. The whole grid is one compiled computation: the EM core
(:func:`bayes_gmm.em.fit_map`, pure and jitted) is ``jax.vmap``-ed over the stacked
hyperparameters under a single ``jax.jit``, so a 256-point sweep costs one compilation
and one call, and a second sweep of the same size (other values, another grid) does not
re-trace. Small problems are padded first (rows to a bucket, component slots to at least
16: :mod:`bayes_gmm.padding`), so a sweep with another K, or on another N of the same
row bucket, reuses that program too, and the program is kept on disk for the next
process (:mod:`bayes_gmm.program_store`). Every point starts from the *same* parameters
(k-means++ and one M-step under the base prior, computed once, or parameters given by
the caller) so that differences between points come from the prior alone, not from where
EM happened to start. The fit under the base prior from that start rides along as one
more row of the batch and is the reference: every point's components are relabelled to
match it (the assignment cost of :func:`bayes_gmm.diagnostics.align_to_pivot`), so
"component 0" means the same cluster across the grid. The result is an
``xarray.Dataset`` with one dimension per swept hyperparameter (``combine="cross"``) or
one ``point`` dimension (``combine="zip"``); ``.to_dataframe()`` gives the long table.

*Posterior level: power scaling.* :func:`power_scaling_sensitivity` runs ArviZ's
power-scaling diagnostic (``arviz_stats.psense_summary``; Kallioinen et al. 2024) on a
posterior DataTree of :func:`bayes_gmm.diagnostics.to_datatree`: it reweights the draws
as if the prior (or the likelihood) were raised to a power near one, without refitting.
The conjugate prior makes an exact check possible: ``p(theta)^a`` of a Dirichlet /
normal-inverse-Wishart prior is again Dirichlet / normal-inverse-Wishart
(:func:`power_scaled_prior`), so the Gibbs sampler can be rerun *exactly* under the
power-scaled prior. :func:`refit_check` does that at a few powers and compares the
measured shift of each marginal posterior with psense's estimate of it.

Validation happens here, at the boundary, before any work; the jitted core trusts it.

References
----------
Kallioinen, N., Paananen, T., Bürkner, P.-C. and Vehtari, A. (2024). Detecting and
diagnosing prior and likelihood sensitivity with power-scaling. Statistics and Computing
34, 57.
"""

from __future__ import annotations

import difflib
import itertools
import json
import logging
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from bayes_gmm import em, gibbs, padding, program_store
from bayes_gmm.checks import check_choice, check_data, check_float, check_int, feature_names
from bayes_gmm.covariance import as_full_covariances
from bayes_gmm.diagnostics import align_to_pivot, to_datatree
from bayes_gmm.em import INIT_METHODS, GMMParams, as_data, check_fit_arguments, fit_map
from bayes_gmm.priors import GMMPrior, check_covariance_type

#: The hyperparameters a grid may sweep, in the order of the Dataset's dimensions.
HYPERPARAMETERS = (
    "weight_concentration_prior",
    "mean_precision_prior",
    "degrees_of_freedom_prior",
    "covariance_prior_scale",
)
COMBINE = ("cross", "zip")
#: A component counts as effective when its MAP weight exceeds this.
WEIGHT_THRESHOLD = 0.01
#: psense's threshold between "insensitive" and "sensitive" (Kallioinen et al. 2024).
PSENSE_THRESHOLD = 0.05
# arviz_stats.psense_summary concatenates its prior and likelihood results along a new
# dimension named "component", which clashes with ours: ours is renamed to this first.
PSENSE_COMPONENT_DIM = "mixture_component"

# Incremented each time the sweep's jitted function is traced (a Python side effect runs
# only while tracing): the tests read it to show that sweeps of one size compile once.
TRACE_COUNT = {"sweep": 0}


# --------------------------------------------------------------------------------------
# MAP sweep


def prior_sweep(
    x,
    base_prior: GMMPrior,
    grid: Mapping,
    *,
    covariance_type: str = "full",
    combine: str = "cross",
    key=0,
    init_params: GMMParams | None = None,
    init: str = "k-means++",
    max_iter: int = 100,
    tol: float = 1e-6,
    weight_threshold: float = WEIGHT_THRESHOLD,
    chunk_size: int | None = None,
) -> xr.Dataset:
    """MAP fits over a grid of hyperparameters, as one compiled, vmapped computation.

    Every point starts from the same parameters, so the sweep follows one mode of the
    posterior as the prior moves: EM climbs from there and does not jump to another
    mode. Where the prior would favour a different configuration (with a small weight
    concentration, fewer components), a fresh fit from k-means++ may find a higher mode
    than the sweep reports; compare ``log_posterior`` with such a fit where it matters.

    Parameters
    ----------
    x : array or DataFrame of shape (n_samples, n_features)
        The data; a DataFrame's column names become the ``feature`` coordinate.
    base_prior : GMMPrior
        The prior every point starts from (:func:`bayes_gmm.default_prior`); a grid
        replaces the swept hyperparameters and keeps the rest. K is
        ``base_prior.weight_concentration.shape[0]``.
    grid : dict of str to 1-D array
        Values of the hyperparameters to sweep, keys among :data:`HYPERPARAMETERS`:

        - ``weight_concentration_prior``: alpha, the same for every component (> 0);
        - ``mean_precision_prior``: kappa0 (> 0);
        - ``degrees_of_freedom_prior``: nu0 (> n_features - 1);
        - ``covariance_prior_scale``: a factor (> 0) on ``base_prior.covariance``.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
    combine : {"cross", "zip"}, default "cross"
        ``"cross"``: every combination (the product of the lengths), one dimension per
        hyperparameter. ``"zip"``: the i-th values of all arrays together (equal lengths),
        one dimension ``point`` with the hyperparameters as coordinates.
    key : int or jax.Array, default 0
        Seed or PRNG key of the k-means++ initialisation (unused with ``init_params``).
    init_params : GMMParams, optional
        The start of every fit, all three fields given. By default: ``init`` seeding and
        one M-step under ``base_prior``, computed once.
    init : {"k-means++", "random", "random_from_data"}, default "k-means++"
    max_iter : int, default 100
    tol : float, default 1e-6
        As in :func:`bayes_gmm.fit_map` (relative change of the log posterior).
    weight_threshold : float, default 0.01
        A component is *effective* when its MAP weight exceeds this.
    chunk_size : int, optional
        Rows per block of the fused E-step (:func:`bayes_gmm.fit_map`).

    Returns
    -------
    xarray.Dataset
        Dimensions: the swept hyperparameters (``cross``, in the order of
        :data:`HYPERPARAMETERS`) or ``point`` (``zip``), written ``...`` below; and
        ``component`` (K), ``feature`` and ``feature_bis`` (D). Variables:

        - ``weights`` (..., component), ``means`` (..., component, feature),
          ``covariances`` (..., component, feature, feature_bis): the MAP estimate,
          components aligned to the reference fit; covariances as full matrices for every
          covariance type (tied repeated per component, diag and spherical on the
          diagonal);
        - ``log_posterior``, ``log_likelihood`` (...): at the MAP, under that point's prior;
        - ``n_effective_components`` (...): components with weight > ``weight_threshold``;
        - ``converged`` (...) bool, ``n_iter`` (...) int;
        - ``label_permutation`` (..., component): the fit's component that took label k;
        - ``reference_weights``, ``reference_means``, ``reference_covariances``,
          ``reference_log_posterior``: the fit under ``base_prior`` from the same start.

        Attributes: ``covariance_type``, ``combine``, ``hyperparameters`` (JSON list of the
        swept names), ``base_prior`` (JSON), ``weight_threshold``, ``max_iter``, ``tol``,
        ``init``, ``relabelled_fraction``.

    Raises
    ------
    TypeError
        ``grid`` is not a mapping.
    ValueError
        An empty grid, an unknown key (close names are suggested), an empty, non-1-D,
        non-numeric, non-finite or non-positive array, degrees of freedom
        <= n_features - 1 (the offending value and its index are named), zipped arrays
        of unequal length; a prior or ``init_params`` that does not match the data.
        All checked before any computation.

    Notes
    -----
    The sweep is exact, not approximate: point i is the fit
    ``fit_map(key, x, prior_i, start)`` with ``prior_i`` built from ``base_prior`` and the
    i-th values, computed for all points at once. All points of a batch run until the
    slowest has converged (``lax.while_loop`` under ``vmap``); the others stop changing
    when they converge, so ``n_iter`` and the results are each point's own.

    A point whose fit is not finite (it should not happen with valid hyperparameters) is
    kept with ``converged=False`` and the identity permutation.
    """
    covariance_type = check_covariance_type(covariance_type)
    combine = check_choice(combine, "combine", COMBINE)
    names = feature_names(x)
    x = check_data(x, "x", min_samples=2)
    n_features = x.shape[1]
    values = check_grid(grid, n_features, combine)
    max_iter = check_int(max_iter, "max_iter", 1)
    tol = check_float(tol, "tol", 0.0)
    weight_threshold = check_float(weight_threshold, "weight_threshold", 0.0)
    if weight_threshold >= 1:
        raise ValueError(
            f"weight_threshold must be in [0, 1) (a weight); got {weight_threshold}. "
            f"The default is {WEIGHT_THRESHOLD}."
        )
    check_choice(init, "init", INIT_METHODS)
    # NumPy, not jnp.asarray: an eager conversion compiles a small program per shape.
    xj = as_data(x)
    check_fit_arguments(xj, base_prior, covariance_type, init, 1, max_iter)
    dtype = xj.dtype
    if isinstance(key, int | np.integer):
        key = jax.random.key(int(key))

    if init_params is None:
        # max_iter=0 returns the start itself: the seeding and one M-step under base_prior.
        init_params, _ = fit_map(key, xj, base_prior, covariance_type=covariance_type,
                                 init=init, max_iter=0, chunk_size=chunk_size)
        init_description = f"{init} seeding (one key) and one M-step under base_prior"
    else:
        init_description = "given init_params"
    init_params = _check_init_params(init_params, base_prior, covariance_type, n_features)
    init_params = GMMParams(*(np.asarray(a, dtype) for a in init_params))

    points, shape = _points(values, combine)
    hyper = _stack_hyperparameters(base_prior, points, dtype)
    params, info = sweep_fits(xj, base_prior, init_params, hyper, tol,
                              covariance_type=covariance_type, max_iter=max_iter,
                              chunk_size=chunk_size)
    return _sweep_dataset(
        params, info, values, shape, combine, names, base_prior, covariance_type,
        weight_threshold, max_iter, tol, init_description,
    )


def sweep_fits(x, base_prior: GMMPrior, init_params: GMMParams, hyperparameters, tol=1e-6,
               *, covariance_type: str = "full", max_iter: int = 100,
               chunk_size: int | None = None):
    """The pure core of :func:`prior_sweep`: P fits and the reference, one jitted call.

    No validation: :func:`prior_sweep` checks everything first.

    Small problems are padded before the compiled program (:mod:`bayes_gmm.padding`):
    rows to a bucket with a row mask of zero, component slots to a power of two (at
    least 16) with a weight concentration of zero, so one program serves every K and
    every N of a bucket (for one D, dtype, number of points and the static settings);
    the results are cut back to K components afterwards and equal the unpadded fits to
    rounding. The program is kept lowered on disk for the next process
    (:mod:`bayes_gmm.program_store`).

    Parameters
    ----------
    x : Array of shape (n_samples, n_features)
    base_prior : GMMPrior
    init_params : GMMParams
        The start of every fit, all fields given, in the dtype of ``x``.
    hyperparameters : tuple of 4 Arrays
        ``alpha`` (P, K), ``kappa0`` (P,), ``nu0`` (P,), ``scale`` (P,) in the dtype of
        ``x`` (:func:`_stack_hyperparameters`).
    tol : float
    max_iter : int
    covariance_type, chunk_size
        Static: a change compiles anew.

    Returns
    -------
    params : GMMParams
        Leading axis P + 1: the P grid points, then the fit under ``base_prior``; NumPy
        arrays unless called under a JAX transformation.
    info : EMInfo
        Leading axis P + 1.
    """
    x = as_data(x)
    traced = padding.is_traced(x, base_prior, init_params, hyperparameters)
    xp = jnp if traced else np
    dtype = x.dtype
    n_samples, n_features = x.shape
    n_components = np.shape(base_prior.weight_concentration)[0]
    rows, slots = padding.padded_shape(n_samples, n_components, n_features)
    x_padded, row_mask = padding.pad_rows(x, rows)
    base = GMMPrior(*(xp.asarray(a, dtype) for a in base_prior))
    start = GMMParams(*(xp.asarray(a, dtype) for a in init_params))
    alpha, kappa, nu, scale = (xp.asarray(h, dtype) for h in hyperparameters)
    n_points = alpha.shape[0]
    padded = (rows, slots) != (n_samples, n_components)
    # A small problem's batch (the points and the reference) is padded to a bucket too,
    # by copies of the base prior (fits like the reference's, dropped afterwards).
    extra = _batch_bucket(n_points + 1) - n_points - 1 if padded else 0
    if extra:
        alpha, kappa, nu, scale = (
            xp.concatenate([h, xp.broadcast_to(b, (extra, *xp.shape(b)))])
            for h, b in zip((alpha, kappa, nu, scale),
                            (base.weight_concentration, base.mean_precision,
                             base.degrees_of_freedom, xp.ones((), dtype)), strict=True)
        )
    # Padded slots: concentration zero, in every point's prior as in the base prior.
    alpha = xp.concatenate(
        [alpha, xp.zeros((alpha.shape[0], slots - n_components), dtype)], axis=1)
    params, info = _sweep_fits(
        x_padded, row_mask, padding.pad_prior(base, slots),
        padding.pad_params(start, slots, covariance_type), (alpha, kappa, nu, scale),
        xp.asarray(tol, dtype), np.int32(max_iter), covariance_type,
        em.history_length(max_iter), chunk_size,
    )
    if not traced:  # cut in NumPy: an eager JAX slice compiles a program per shape
        params, info = jax.device_get((params, info))
    info = info._replace(history=info.history[:, : max_iter + 1])  # its buffer is longer
    if not padded:
        return params, info
    kept = xp.concatenate([xp.arange(n_points), xp.array([n_points + extra])])

    def cut(a, components=True):
        a = a[kept]
        return a[:, :n_components] if components else a

    params = GMMParams(cut(params.weights), cut(params.means),
                       cut(params.covariances, covariance_type != "tied"))
    info = info._replace(dead=cut(info.dead), **{
        name: cut(getattr(info, name), False)
        for name in ("log_posterior", "log_likelihood", "n_iter", "converged", "history",
                     "init_log_posteriors")})
    return params, info


def _batch_bucket(size: int) -> int:
    """The smallest of 8, 10, 12, 14, 16, 20, 24, ... (four steps per doubling) that
    holds ``size`` fits: grids of nearby sizes share a program, at most 25% padding."""
    if size <= 8:
        return 8
    step = (1 << (size - 1).bit_length()) // 8
    return -(-size // step) * step


def _sweep_fits_core(x, row_mask, base_prior, init_params, hyper, tol, max_iter,
                     covariance_type, length, chunk_size):
    """Every point's fit and the reference's, on padded rows and component slots."""
    TRACE_COUNT["sweep"] += 1
    dtype = x.dtype
    base = GMMPrior(*(jnp.asarray(a, dtype) for a in base_prior))
    # The reference (the base prior itself) is one more row of the batch.
    alpha, kappa, nu, scale = (
        jnp.concatenate([h, jnp.asarray(b, dtype)[None]])
        for h, b in zip(hyper, (base.weight_concentration, base.mean_precision,
                                base.degrees_of_freedom, jnp.ones((), dtype)), strict=True)
    )

    def one(alpha, kappa, nu, scale):
        prior = GMMPrior(alpha, base.mean, kappa, nu, base.covariance * scale)
        return _fit_point(x, row_mask, prior, init_params, tol, max_iter, covariance_type,
                          length, chunk_size)

    return jax.vmap(one)(alpha, kappa, nu, scale)


def _fit_point(x, row_mask, prior, init_params, tol, max_iter, covariance_type, length,
               chunk_size):
    """One point's fit: EM's core on the padded problem (one device: the batch of points
    is the parallel axis), from ``init_params`` with every field given."""
    key = jax.random.key(0)  # unused: every field of the start is given
    return em._fit_map_core(key, x, row_mask, prior, init_params, tol, max_iter,
                            covariance_type, "k-means++", 1, length, False, chunk_size, None)


# Jitted, and kept lowered on disk for the next process (bayes_gmm.program_store).
_sweep_fits = program_store.stored_jit(_sweep_fits_core, (7, 8, 9))


def point_prior(base_prior: GMMPrior, **values) -> GMMPrior:
    """``base_prior`` with hyperparameters replaced as one grid point does it.

    ``values`` are scalars keyed by :data:`HYPERPARAMETERS`: the weight concentration is
    set for every component, ``covariance_prior_scale`` multiplies the covariance prior.
    """
    unknown = sorted(set(values) - set(HYPERPARAMETERS))
    if unknown:
        raise ValueError(_unknown_key_message(unknown[0]))
    prior = GMMPrior(*(np.asarray(a, np.float64) for a in base_prior))
    if "weight_concentration_prior" in values:
        prior = prior._replace(weight_concentration=np.full(
            prior.weight_concentration.shape, float(values["weight_concentration_prior"])))
    if "mean_precision_prior" in values:
        prior = prior._replace(mean_precision=np.asarray(float(values["mean_precision_prior"])))
    if "degrees_of_freedom_prior" in values:
        prior = prior._replace(
            degrees_of_freedom=np.asarray(float(values["degrees_of_freedom_prior"])))
    if "covariance_prior_scale" in values:
        scale = float(values["covariance_prior_scale"])
        prior = prior._replace(covariance=prior.covariance * scale)
    return prior


# --------------------------------------------------------------------------------------
# Grid checks


def check_grid(grid, n_features: int, combine: str = "cross") -> dict:
    """Check a grid before any work; return ``{name: float64 1-D array}`` in the order of
    :data:`HYPERPARAMETERS`. Messages name the key, the offending value and its index."""
    if not isinstance(grid, Mapping):
        raise TypeError(
            f"grid must be a dict of hyperparameter name -> 1-D array of values; got "
            f"{type(grid).__name__}. Example: {{'mean_precision_prior': [0.01, 0.1, 1.0]}}."
        )
    if len(grid) == 0:
        raise ValueError(
            "grid is empty: give at least one hyperparameter to sweep, one of "
            f"{', '.join(HYPERPARAMETERS)}; e.g. {{'mean_precision_prior': [0.01, 0.1, 1.0]}}."
        )
    for name in grid:
        if name not in HYPERPARAMETERS:
            raise ValueError(_unknown_key_message(name))
    checked = {}
    for name in HYPERPARAMETERS:
        if name not in grid:
            continue
        try:
            values = np.asarray(grid[name], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"grid[{name!r}] must be a 1-D array of numbers; got {grid[name]!r}."
            ) from None
        if values.ndim != 1:
            raise ValueError(
                f"grid[{name!r}] must be a 1-D array of values; got shape {values.shape}. "
                + ("Wrap a single value in a list, e.g. [1.0]." if values.ndim == 0
                   else "Flatten it, or pass one array per hyperparameter.")
            )
        if values.size == 0:
            raise ValueError(
                f"grid[{name!r}] is empty: give at least one value, e.g. "
                f"numpy.geomspace(0.01, 10, 8)."
            )
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(
                f"grid[{name!r}] must be finite; got {values[bad[0]]} at index {bad[0]}."
            )
        if name == "degrees_of_freedom_prior":
            bad = np.flatnonzero(~(values > n_features - 1))
            if bad.size:
                raise ValueError(
                    f"grid[{name!r}] must be > n_features - 1 = {n_features - 1} (the "
                    f"inverse Wishart needs it); got {values[bad[0]]} at index {bad[0]}. "
                    f"The default is n_features + 2 = {n_features + 2}."
                )
        else:
            bad = np.flatnonzero(~(values > 0))
            if bad.size:
                raise ValueError(
                    f"grid[{name!r}] must be > 0; got {values[bad[0]]} at index {bad[0]}. "
                    "Sweep positive values, e.g. numpy.geomspace(0.01, 10, 8)."
                )
        checked[name] = values
    if combine == "zip":
        lengths = {name: v.size for name, v in checked.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                "combine='zip' needs arrays of equal length (the i-th values form point "
                f"i); got lengths {lengths}. Make them equal, or use combine='cross' for "
                "every combination."
            )
    return checked


def _unknown_key_message(name) -> str:
    close = difflib.get_close_matches(str(name), HYPERPARAMETERS, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    return (
        f"grid has an unknown hyperparameter {name!r}; expected keys among "
        f"{', '.join(map(repr, HYPERPARAMETERS))}.{hint}"
    )


def _check_init_params(params, prior, covariance_type, n_features) -> GMMParams:
    n_components = np.shape(prior.weight_concentration)[0]
    k, d = n_components, n_features
    expected = ((k,), (k, d), {"full": (k, d, d), "tied": (d, d), "diag": (k, d),
                               "spherical": (k,)}[covariance_type])
    if not isinstance(params, tuple) or len(params) != 3 or any(a is None for a in params):
        raise ValueError(
            "init_params must be a GMMParams with weights, means and covariances all given "
            f"(shapes {expected[0]}, {expected[1]}, {expected[2]}); got {params!r}."
        )
    got = tuple(np.shape(a) for a in params)
    if got != expected:
        raise ValueError(
            f"init_params must have shapes {expected[0]}, {expected[1]} and {expected[2]} "
            f"for covariance_type={covariance_type!r}; got {got[0]}, {got[1]} and {got[2]}."
        )
    if not all(np.all(np.isfinite(np.asarray(a))) for a in params):
        raise ValueError("init_params must be finite; got NaN or infinite values.")
    return GMMParams(*params)


def _points(values: dict, combine: str):
    """The grid's points as {name: (P,) array} and the shape of the result (C order)."""
    if combine == "zip":
        return values, (next(iter(values.values())).size,)
    shape = tuple(v.size for v in values.values())
    product = np.array(list(itertools.product(*values.values())), np.float64)
    return {name: product[:, i] for i, name in enumerate(values)}, shape


def _stack_hyperparameters(base_prior: GMMPrior, points: dict, dtype):
    """(alpha (P, K), kappa0 (P,), nu0 (P,), scale (P,)) in ``dtype``; unswept ones from
    ``base_prior`` (a scale of 1)."""
    n_points = next(iter(points.values())).size
    n_components = np.shape(base_prior.weight_concentration)[0]
    alpha = np.broadcast_to(np.asarray(base_prior.weight_concentration, np.float64),
                            (n_points, n_components))
    if "weight_concentration_prior" in points:
        alpha = np.repeat(points["weight_concentration_prior"][:, None], n_components, 1)

    def column(name, default):
        return points.get(name, np.full(n_points, float(default)))

    hyper = (alpha, column("mean_precision_prior", base_prior.mean_precision),
             column("degrees_of_freedom_prior", base_prior.degrees_of_freedom),
             column("covariance_prior_scale", 1.0))
    return tuple(np.ascontiguousarray(h, dtype) for h in hyper)


# --------------------------------------------------------------------------------------
# The Dataset


def _sweep_dataset(params, info, values, shape, combine, names, base_prior, covariance_type,
                   weight_threshold, max_iter, tol, init_description) -> xr.Dataset:
    weights, means, covariances = (np.asarray(a) for a in params)
    n_points = weights.shape[0] - 1
    n_components, n_features = means.shape[1:]
    reference = GMMParams(weights[-1], means[-1], covariances[-1])
    fits = GMMParams(weights[:-1], means[:-1], covariances[:-1])
    log_post = np.asarray(info.log_posterior)
    finite = np.all(np.isfinite(weights[:-1]), -1) & np.isfinite(log_post[:-1])
    finite &= np.all(np.isfinite(means[:-1].reshape(n_points, -1)), -1)
    finite &= np.all(np.isfinite(covariances[:-1].reshape(n_points, -1)), -1)

    permutations = np.tile(np.arange(n_components), (n_points, 1))
    aligned = [np.array(a) for a in fits]
    if np.any(finite) and np.all(np.isfinite(log_post[-1])):
        ok = np.flatnonzero(finite)
        subset = GMMParams(*(a[ok][None] for a in fits))
        moved, perms = align_to_pivot(subset, reference, covariance_type)
        permutations[ok] = perms[0]
        for target, source in zip(aligned, moved, strict=True):
            target[ok] = source[0]
    dtype = weights.dtype
    full = np.stack([as_full_covariances(c, covariance_type, n_components, n_features)
                     for c in aligned[2]]).astype(dtype)
    reference_full = as_full_covariances(reference.covariances, covariance_type,
                                         n_components, n_features).astype(dtype)

    if combine == "cross":
        lead = tuple(values)
        coords = dict(values)
    else:
        lead = ("point",)
        coords = {"point": np.arange(n_points),
                  **{name: ("point", v) for name, v in values.items()}}
    features = np.arange(n_features) if names is None else names
    coords.update(component=np.arange(n_components), feature=features, feature_bis=features)

    def grid_shaped(a):
        return np.asarray(a)[:n_points].reshape(*shape, *np.shape(a)[1:])

    component_weights = grid_shaped(aligned[0])
    data = {
        "weights": (lead + ("component",), component_weights),
        "means": (lead + ("component", "feature"), grid_shaped(aligned[1])),
        "covariances": (lead + ("component", "feature", "feature_bis"), grid_shaped(full)),
        "log_posterior": (lead, grid_shaped(info.log_posterior)),
        "log_likelihood": (lead, grid_shaped(info.log_likelihood)),
        "n_effective_components": (lead, np.sum(component_weights > weight_threshold, -1)),
        "converged": (lead, grid_shaped(info.converged) & grid_shaped(finite)),
        "n_iter": (lead, grid_shaped(info.n_iter)),
        "label_permutation": (lead + ("component",), grid_shaped(permutations)),
        "reference_weights": (("component",), reference.weights),
        "reference_means": (("component", "feature"), reference.means),
        "reference_covariances": (("component", "feature", "feature_bis"), reference_full),
        "reference_log_posterior": ((), log_post[-1]),
    }
    identity = np.arange(n_components)
    attrs = {
        "covariance_type": covariance_type,
        "combine": combine,
        "hyperparameters": json.dumps(list(values)),
        "base_prior": json.dumps({name: np.asarray(v, np.float64).tolist()
                                  for name, v in zip(GMMPrior._fields, base_prior,
                                                     strict=True)}),
        "weight_threshold": weight_threshold,
        "max_iter": max_iter,
        "tol": tol,
        "init": init_description,
        "alignment_pivot": "the fit under base_prior from the same start",
        "relabelled_fraction": float(np.mean(np.any(permutations != identity, -1))),
    }
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    ds["covariances"].attrs["description"] = (
        f"full matrices for covariance_type={covariance_type!r}"
    )
    ds["n_effective_components"].attrs["description"] = f"weights > {weight_threshold}"
    return ds


def swept_hyperparameters(dataset: xr.Dataset) -> list[str]:
    """The hyperparameters a :func:`prior_sweep` Dataset was swept over."""
    try:
        return list(json.loads(dataset.attrs["hyperparameters"]))
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            "dataset has no readable 'hyperparameters' attribute; pass the Dataset that "
            "bayes_gmm.sensitivity.prior_sweep returned."
        ) from None


# --------------------------------------------------------------------------------------
# Power scaling


def power_scaled_prior(prior: GMMPrior, alpha, covariance_type: str = "full") -> GMMPrior:
    r"""The prior whose density is proportional to ``p(theta) ** alpha``.

    The conjugate family is closed under powers. Raising each factor and reading off the
    new exponents (K components, D features):

    - weights: :math:`\prod_k \pi_k^{a_k - 1}` becomes
      :math:`\prod_k \pi_k^{\alpha(a_k - 1)}`, so :math:`a_k' = \alpha (a_k - 1) + 1`;
    - means and covariances: every term of the log density of
      :math:`(\mu_k, \Sigma_k)` that depends on theta is linear in
      :math:`\kappa_0`, :math:`\Psi_0` and the exponent of :math:`|\Sigma|` (or of
      :math:`\sigma^2`), so :math:`\kappa_0' = \alpha\kappa_0`,
      :math:`\Psi_0' = \alpha\Psi_0` and :math:`\nu_0' + c = \alpha(\nu_0 + c)` where
      ``c`` is what the exponent adds to ``nu0``:

      - full: :math:`|\Sigma_k|^{-(\nu_0 + D + 1)/2}` from the inverse Wishart and
        :math:`|\Sigma_k|^{-1/2}` from the normal on the mean: ``c = D + 2``;
      - tied: one inverse Wishart and K normals share :math:`\Sigma`: ``c = D + 1 + K``;
      - diag: per feature :math:`(\sigma^2)^{-(\nu_0/2 + 1) - 1/2}`: ``c = 3``;
      - spherical: :math:`(\sigma^2_k)^{-(\nu_0/2 + 1) - D/2}`: ``c = D + 2``.

    The prior mean ``m0`` is unchanged. ``alpha = 1`` gives ``prior`` back.

    Parameters
    ----------
    prior : GMMPrior
    alpha : float
        The power, > 0.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"

    Returns
    -------
    GMMPrior
        float64 arrays.

    Raises
    ------
    ValueError
        When the powered density is not a proper prior of the family: a Dirichlet
        concentration or the degrees of freedom out of range (e.g. ``alpha`` large with
        concentrations below one, or small with few degrees of freedom).
    """
    covariance_type = check_covariance_type(covariance_type)
    alpha = check_float(alpha, "alpha", 0.0)
    if alpha == 0:
        raise ValueError("alpha must be > 0 (the power of the prior); got 0.")
    prior = GMMPrior(*(np.asarray(a, np.float64) for a in prior))
    n_components = prior.weight_concentration.shape[0]
    n_features = prior.mean.shape[0]
    c = {"full": n_features + 2, "tied": n_features + 1 + n_components, "diag": 3,
         "spherical": n_features + 2}[covariance_type]
    concentration = alpha * (prior.weight_concentration - 1) + 1
    nu = alpha * (prior.degrees_of_freedom + c) - c
    if not np.all(concentration > 0):
        raise ValueError(
            f"power {alpha} of the prior is not a proper Dirichlet: the concentrations "
            f"become {concentration.tolist()} (need > 0). With concentrations below one, "
            "use a power closer to 1."
        )
    smallest = n_features - 1 if covariance_type in ("full", "tied") else 0
    if not nu > smallest:
        raise ValueError(
            f"power {alpha} of the prior is not a proper prior of the family: the degrees "
            f"of freedom become {float(nu):.4g} (need > {smallest}). Use a power closer "
            "to 1, or a larger degrees_of_freedom_prior."
        )
    return GMMPrior(concentration, prior.mean, alpha * prior.mean_precision, np.asarray(nu),
                    alpha * prior.covariance)


def _psense_tree(tree: xr.DataTree) -> xr.DataTree:
    """The groups psense reads, with ``component`` renamed (see PSENSE_COMPONENT_DIM)."""
    if not isinstance(tree, xr.DataTree):
        raise TypeError(
            f"tree must be an xarray.DataTree from bayes_gmm.diagnostics.to_datatree (or "
            f"bayes_gmm.posterior.sample); got {type(tree).__name__}."
        )
    missing = [g for g in ("posterior", "log_prior", "log_likelihood") if g not in tree.children]
    if missing:
        raise ValueError(
            f"tree lacks the group(s) {missing} that power scaling needs (posterior draws, "
            "their log prior and pointwise log likelihood). Build it with "
            "bayes_gmm.diagnostics.to_datatree(..., log_likelihood=True)."
        )
    groups = {}
    for name in ("posterior", "log_prior", "log_likelihood"):
        ds = tree[name].to_dataset()
        if "component" in ds.dims:
            ds = ds.rename({"component": PSENSE_COMPONENT_DIM})
        groups[name] = ds
    return xr.DataTree.from_dict(groups)


def power_scaling_sensitivity(tree: xr.DataTree, *, var_names=None,
                              threshold: float = PSENSE_THRESHOLD, alphas=(0.99, 1.01),
                              round_to: int | None = None) -> pd.DataFrame:
    """Prior and likelihood power-scaling sensitivity of every parameter, without refitting.

    A thin wrapper of ``arviz_stats.psense_summary`` (Kallioinen et al. 2024) for the trees
    of :func:`bayes_gmm.diagnostics.to_datatree`: the draws are importance-weighted (Pareto
    smoothed) as if the prior, or the likelihood, were raised to the powers ``alphas``,
    and each marginal's cumulative Jensen-Shannon distance to the unweighted draws, per
    unit of ``log2`` of the power, is reported. Draws should be aligned to the MAP (the
    default of ``to_datatree``) so that component-wise marginals mean something.

    Parameters
    ----------
    tree : xarray.DataTree
        With ``posterior``, ``log_prior`` and ``log_likelihood`` groups.
    var_names : list of str, optional
        Posterior variables to report; by default weights, means and covariances.
    threshold : float, default 0.05
        psense's cut-off between insensitive and sensitive.
    alphas : (float, float), default (0.99, 1.01)
    round_to : int, optional
        Digits to round to (psense's default is 3); by default no rounding.

    Returns
    -------
    pandas.DataFrame
        Indexed by scalar parameter, e.g. ``"means[0, 1]"`` (component first; of a
        full or tied covariance matrix the upper triangle only); columns
        ``prior``, ``likelihood`` (the sensitivities) and ``diagnosis`` (psense's
        verdict: ``"✓"``, ``"potential strong prior / weak likelihood"`` or
        ``"potential prior-data conflict"``).
    """
    import arviz_stats

    renamed = _psense_tree(tree)
    var_names = list(var_names) if var_names is not None else [
        v for v in ("weights", "means", "covariances") if v in renamed["posterior"].data_vars]
    # psense logs a warning whenever it flags something; the table says it already.
    logger = logging.getLogger("arviz_stats.psense")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        table = arviz_stats.psense_summary(
            renamed, var_names=var_names, threshold=threshold, alphas=tuple(alphas),
            round_to=20 if round_to is None else round_to,
        )
    finally:
        logger.setLevel(level)
    table.index.name = "parameter"
    return table.drop(index=_mirrored_covariances(renamed["posterior"], table.index))


def _mirrored_covariances(posterior, labels) -> list[str]:
    """Rows ``covariances[..., a, b]`` below the diagonal of a symmetric matrix: the same
    number as ``[..., b, a]``, so reported once (upper triangle, as the comparison
    table does) and not counted twice."""
    if "covariances" not in posterior or "feature_bis" not in posterior["covariances"].dims:
        return []
    position = {str(v): i for i, v in enumerate(posterior["feature"].values)}
    mirrored = []
    for label in labels:
        if label.startswith("covariances["):
            *_, row, column = label[len("covariances["):-1].split(", ")
            if position[row] > position[column]:
                mirrored.append(label)
    return mirrored


def cjs_distance(a, b) -> float:
    """Cumulative Jensen-Shannon distance between the samples ``a`` and ``b`` (1-D).

    The measure of ``arviz_stats.psense`` (Nielsen 2013; Kallioinen et al. 2024), here
    between two empirical distributions on their merged support rather than between
    weighted and unweighted copies of one sample; the larger of the distances of the
    samples and of their negatives, as psense takes. 0 for identical samples, at most 1.
    """
    a = np.sort(np.asarray(a, np.float64).ravel())
    b = np.sort(np.asarray(b, np.float64).ravel())
    return max(_cjs_one_side(a, b), _cjs_one_side(np.sort(-a), np.sort(-b)))


def _cjs_one_side(a, b) -> float:
    support = np.sort(np.concatenate([a, b]))
    width = np.diff(support)
    p = np.searchsorted(a, support[:-1], side="right") / a.size
    q = np.searchsorted(b, support[:-1], side="right") / b.size
    p_int, q_int = p @ width, q @ width
    bound = p_int + q_int
    if not bound > 0:
        return 0.0
    mid = _log2(0.5 * (p + q))
    pq = max(0.0, np.sum(width * p * (_log2(p) - mid)) + 0.5 / math.log(2) * (q_int - p_int))
    qp = max(0.0, np.sum(width * q * (_log2(q) - mid)) + 0.5 / math.log(2) * (p_int - q_int))
    return float(np.sqrt((pq + qp) / bound))


def _log2(u):
    return np.log2(u, out=np.zeros_like(u), where=u > 0)


def refit_check(
    key,
    x,
    prior: GMMPrior,
    map_params: GMMParams,
    *,
    covariance_type: str = "full",
    alphas=(0.8, 1.25),
    num_chains: int = 2,
    num_warmup: int = 200,
    num_samples: int = 500,
    threshold: float = PSENSE_THRESHOLD,
    feature_names=None,
) -> pd.DataFrame:
    """Check psense's prior sensitivity against exact Gibbs reruns under powered priors.

    Runs the conjugate Gibbs sampler (:func:`bayes_gmm.gibbs.sample`) from ``map_params``
    under ``prior`` (the base run) and under :func:`power_scaled_prior` at each power in
    ``alphas``, all with the same key (common random numbers: the runs differ by the prior
    alone, which keeps their Monte Carlo noise out of the differences), plus one base run
    with another key (the noise floor). Every run is aligned to ``map_params``.

    What it measures, per scalar parameter:

    - ``psense``: psense's prior sensitivity from the base run alone
      (:func:`power_scaling_sensitivity`, importance weighting at powers 0.99 and 1.01);
    - ``refit``: the same quantity from the reruns,
      ``mean over a in alphas of CJS(draws_a, draws_1) / |log2 a|``
      (:func:`cjs_distance`); psense estimates its limit as ``a -> 1``, so for a
      posterior that moves smoothly with the power the two agree up to Monte Carlo error;
    - ``noise``: ``CJS(base run, base run with another key) / mean |log2 a|``: what
      ``refit`` shows with no prior change at all, for independent runs (the common keys
      make the actual noise of ``refit`` smaller than this);
    - ``mean_shift``: the change of the posterior mean per unit ``log alpha``, in
      posterior standard deviations: ``(mean_hi - mean_lo) / (log hi - log lo) / sd_1``
      between the smallest and largest power;
    - ``psense_sensitive``, ``refit_sensitive``: each value >= ``threshold``;
      ``agree``: the two verdicts are the same.

    The likelihood's power cannot be refitted this way (a tempered mixture likelihood is
    not conjugate), so only the prior is checked.

    Parameters
    ----------
    key : jax.Array or int
    x : array of shape (n_samples, n_features)
    prior : GMMPrior
    map_params : GMMParams
        The MAP under ``prior``: start of every chain and pivot of the alignment.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
    alphas : sequence of float, default (0.8, 1.25)
        Powers of the prior to rerun at (each != 1).
    num_chains, num_warmup, num_samples : int
        Of every Gibbs run.
    threshold : float, default 0.05
    feature_names : sequence of str, optional

    Returns
    -------
    pandas.DataFrame
        Indexed like :func:`power_scaling_sensitivity`, columns as above. ``attrs`` hold
        the powers, the run sizes and the fraction of parameters where the verdicts agree
        (``agreement``).
    """
    covariance_type = check_covariance_type(covariance_type)
    alphas = [check_float(a, "alphas", 0.0) for a in np.atleast_1d(alphas).tolist()]
    if not alphas or any(a <= 0 or a == 1 for a in alphas):
        raise ValueError(
            f"alphas must be powers > 0 and != 1 (the base run is alpha = 1); got {alphas}. "
            "The default is (0.8, 1.25)."
        )
    if isinstance(key, int | np.integer):
        key = jax.random.key(int(key))
    x = check_data(x, "x", min_samples=2)
    xj = jnp.asarray(x)
    priors = [prior] + [power_scaled_prior(prior, a, covariance_type) for a in alphas]
    noise_key = jax.random.fold_in(key, 1)

    def run(run_key, run_prior):
        draws, _ = gibbs.sample(
            run_key, xj, GMMPrior(*(jnp.asarray(a, xj.dtype) for a in run_prior)), map_params,
            covariance_type=covariance_type, num_samples=num_samples,
            num_warmup=num_warmup, num_chains=num_chains,
        )
        return draws

    base, _ = align_to_pivot(run(key, prior), map_params, covariance_type)
    # Aligned here, so the tree needs no MAP group (whose log densities cost a compile).
    tree = to_datatree(base, x=x, prior=prior, covariance_type=covariance_type,
                       method="gibbs", align=False, feature_names=feature_names)
    psense = power_scaling_sensitivity(tree)["prior"]

    def flat(draws, align=True):
        if align:
            draws, _ = align_to_pivot(draws, map_params, covariance_type)
        ds = _params_dataset(draws, covariance_type, tree)
        return {label: values for label, values in _scalar_columns(ds)}

    base_columns = flat(base, align=False)
    for label in _mirrored_covariances(_psense_tree(tree)["posterior"], list(base_columns)):
        del base_columns[label]  # a symmetric matrix: its upper triangle, as psense's rows
    refits = [flat(run(key, p)) for p in priors[1:]]
    noise_columns = flat(run(noise_key, prior))
    logs = np.log2(alphas)
    order = np.argsort(alphas)
    lo, hi = order[0], order[-1]
    rows = {}
    for label, base_values in base_columns.items():
        refit = np.mean([cjs_distance(r[label], base_values) / abs(lg)
                         for r, lg in zip(refits, logs, strict=True)])
        sd = np.std(base_values)
        shift = np.nan
        if lo != hi and sd > 0:
            shift = ((np.mean(refits[hi][label]) - np.mean(refits[lo][label]))
                     / (np.log(alphas[hi]) - np.log(alphas[lo])) / sd)
        rows[label] = {
            "psense": float(psense.get(label, np.nan)),
            "refit": float(refit),
            "noise": cjs_distance(noise_columns[label], base_values) / np.mean(np.abs(logs)),
            "mean_shift": float(shift),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "parameter"
    table["psense_sensitive"] = table["psense"] >= threshold
    table["refit_sensitive"] = table["refit"] >= threshold
    table["agree"] = table["psense_sensitive"] == table["refit_sensitive"]
    table.attrs.update(alphas=list(alphas), num_chains=num_chains, num_warmup=num_warmup,
                       num_samples=num_samples, threshold=threshold,
                       agreement=float(table["agree"].mean()))
    return table


def _params_dataset(draws: GMMParams, covariance_type, tree) -> xr.Dataset:
    """Aligned draws in the posterior group's layout (same dims and coordinates)."""
    posterior = tree["posterior"].to_dataset()
    return xr.Dataset(
        {name: (posterior[name].dims, np.asarray(value))
         for name, value in zip(("weights", "means", "covariances"), draws, strict=True)},
        coords=posterior.coords,
    )


def _scalar_columns(ds: xr.Dataset):
    """(label, draws of shape (chain * draw,)) per scalar parameter, labelled as psense
    labels its rows: ``name[coord, coord]`` in dimension order."""
    for name in ("weights", "means", "covariances"):
        da = ds[name]
        dims = [d for d in da.dims if d not in ("chain", "draw")]
        values = da.transpose("chain", "draw", *dims).values
        values = values.reshape(-1, *values.shape[2:])
        for index in itertools.product(*(range(da.sizes[d]) for d in dims)):
            labels = [str(da[d].values[i]) for d, i in zip(dims, index, strict=True)]
            label = f"{name}[{', '.join(labels)}]" if labels else name
            yield label, values[(slice(None), *index)]
