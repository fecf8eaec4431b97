"""Simulation-based calibration (SBC): do the samplers draw from the posterior they claim?

A sampler of ``p(theta | x)`` is tested against the model itself (Talts et al., 2018).
For each of many simulations, draw ``theta* ~ p(theta)`` from the prior, data
``x ~ p(x | theta*)`` from the mixture, and ``L`` posterior draws ``theta_1..theta_L``
given ``x`` with the sampler under test. For any function ``f(theta, x)`` the rank of
``f(theta*, x)`` among the ``f(theta_l, x)`` is then uniform on ``0..L``, *if and only if*
(over all ``f``) the draws come from the exact posterior: ``theta*`` is itself a draw
from ``p(theta | x)``, exchangeable with the sampler's. A sampler with a wrong update
(a forgotten prior term, a wrong degree of freedom) piles the ranks up at the ends
(posterior too narrow or shifted) or in the middle (too wide).

Quantities ranked here:

- *label-invariant* (no relabelling needed): the log likelihood of the simulated data,
  the sorted weights, the sorted first coordinate of the means, and the sorted
  log-determinants of the covariances;
- *aligned*: every weight, mean coordinate and log variance (the covariance diagonal)
  after relabelling the draws *and* ``theta*`` to the MAP of ``x`` (a function of ``x``
  alone, so the ranks stay uniform; :func:`bayes_gmm.diagnostics.align_to_pivot`).

Uniformity is checked per quantity by a chi-square test over ``num_bins`` bins of the
ranks, with a Bonferroni correction over the quantities: the sampler passes when every
p-value exceeds ``alpha / Q``, so a correct sampler fails with probability at most
``alpha`` (exactly so only if its draws were independent; thinning makes them nearly so).
:func:`plot_sbc` draws the ECDF-difference plot with simultaneous bands (ArviZ's
``plot_ecdf_pit``; Säilynoja et al., 2022).

The sampler is an argument: :func:`gibbs_sampler` (the conjugate Gibbs sampler) and
:func:`nuts_sampler` (NumPyro's NUTS through its functional interface), both pure and run
over a batch of simulations under ``vmap`` with one compilation per call of :func:`sbc`,
or any function with the same signature (one that cannot run under ``vmap`` is called
once per simulation); the tests pass a deliberately broken Gibbs sampler and check that
SBC rejects it.

References
----------
Talts, S., Betancourt, M., Simpson, D., Vehtari, A. and Gelman, A. (2018). Validating
Bayesian inference algorithms with simulation-based calibration. arXiv:1804.06788.
Säilynoja, T., Bürkner, P.-C. and Vehtari, A. (2022). Graphical test for discrete
uniformity and its applications in goodness-of-fit evaluation and multiple sample
comparison. Statistics and Computing 32, 32.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import stats

from bayes_gmm import em, gibbs
from bayes_gmm.checks import check_float, check_int
from bayes_gmm.diagnostics import align_to_pivot
from bayes_gmm.em import GMMParams
from bayes_gmm.priors import GMMPrior, check_covariance_type, default_prior

# A sampler under test: (key, x, prior, init_params, covariance_type) -> GMMParams whose
# arrays have one leading axis of L posterior draws.
Sampler = Callable[..., GMMParams]


class SBCResult(NamedTuple):
    """What :func:`sbc` found."""

    table: pd.DataFrame  # one row per quantity: chi2, dof, p_value, threshold, passed
    ranks: pd.DataFrame  # (num_simulations, Q) ranks in 0..num_draws
    num_draws: int  # L, posterior draws per simulation (ranks take L + 1 values)
    num_bins: int
    alpha: float  # family-wise level; each quantity is tested at alpha / Q
    passed: bool  # every quantity passed
    settings: dict  # sizes, sampler name, seconds


# --------------------------------------------------------------------------------------
# The generative side: prior, data


def sbc_prior(
    n_components: int,
    n_features: int,
    covariance_type: str = "full",
    *,
    weight_concentration: float = 3.0,
    mean_precision: float = 0.1,
    extra_degrees_of_freedom: float = 4.0,
) -> GMMPrior:
    """A fixed (data-independent) proper prior for SBC, with ``E[Sigma_k] = I``.

    SBC needs a prior that does not look at the data (the default prior of
    :func:`bayes_gmm.default_prior` does). Here ``m0 = 0``, ``kappa0 = mean_precision``
    (component means spread about ``1 / sqrt(kappa0)`` standard deviations),
    ``nu0 = D + extra_degrees_of_freedom`` and ``Psi0`` scaled so that the prior mean of
    every covariance is the identity; ``alpha = weight_concentration`` keeps components
    from being nearly empty (their labels mix slowly under Gibbs).
    """
    covariance_type = check_covariance_type(covariance_type)
    d = check_int(n_features, "n_features", 1)
    nu0 = d + check_float(extra_degrees_of_freedom, "extra_degrees_of_freedom", 2.0)
    if covariance_type in ("full", "tied"):
        psi0 = (nu0 - d - 1) * np.eye(d)  # E[IW(nu, Psi)] = Psi / (nu - D - 1)
    elif covariance_type == "diag":
        psi0 = np.full(d, nu0 - 2)  # E[InvGamma(nu/2, psi/2)] = psi / (nu - 2)
    else:
        psi0 = nu0 - 2
    return default_prior(
        np.zeros((2, d)), n_components, covariance_type,
        weight_concentration_prior=weight_concentration, mean_prior=np.zeros(d),
        mean_precision_prior=mean_precision, degrees_of_freedom_prior=nu0,
        covariance_prior=psi0,
    )


def sample_prior(key, prior: GMMPrior, covariance_type: str = "full", dtype=None) -> GMMParams:
    """One draw of (pi, mu, Sigma) from the conjugate prior.

    The prior is the Gibbs sampler's conditional posterior with no points assigned
    (n_k = 0 for every k), so :func:`bayes_gmm.gibbs.draw_parameters` draws it exactly.
    Pure: usable under ``jit`` and ``vmap``.
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    alpha, m0, kappa0, nu0, psi0 = (jnp.asarray(a, dtype) for a in prior)
    k, d = alpha.shape[0], m0.shape[0]
    per_component = covariance_type != "tied"
    posterior = gibbs.ConditionalPosterior(
        weight_concentration=alpha,
        mean=jnp.broadcast_to(m0, (k, d)),
        mean_precision=jnp.broadcast_to(kappa0, (k,)),
        degrees_of_freedom=jnp.broadcast_to(nu0, (k,)) if per_component else nu0,
        covariance=jnp.broadcast_to(psi0, (k, *psi0.shape)) if per_component else psi0,
    )
    return gibbs.draw_parameters(key, posterior, covariance_type)


def simulate_data(key, params: GMMParams, n_samples: int, covariance_type: str = "full"):
    """``n_samples`` points from the mixture ``params``: (x of shape (N, D), labels (N,))."""
    label_key, noise_key = jax.random.split(key)
    k, d = params.means.shape
    labels = jax.random.categorical(label_key, jnp.log(params.weights), shape=(n_samples,))
    cholesky = jnp.linalg.cholesky(_full(params.covariances, covariance_type, k, d, jnp))
    noise = jax.random.normal(noise_key, (n_samples, d), params.means.dtype)
    x = params.means[labels] + jnp.einsum("nij,nj->ni", cholesky[labels], noise)
    return x, labels


# --------------------------------------------------------------------------------------
# Samplers under test


def gibbs_sampler(num_draws: int = 99, *, num_warmup: int = 100, thinning: int = 5) -> Sampler:
    """The conjugate Gibbs sampler (:func:`bayes_gmm.gibbs.sample`, one chain) as an SBC
    sampler: ``num_draws`` draws kept, one every ``thinning`` transitions after
    ``num_warmup``. Pure, so :func:`sbc` runs simulations side by side under ``vmap``."""

    def run(key, x, prior, init_params, covariance_type):
        draws, _ = gibbs.sample(
            key, x, prior, init_params, covariance_type=covariance_type,
            num_samples=num_draws, num_warmup=num_warmup, num_chains=1, thinning=thinning,
        )
        return GMMParams(*(a[0] for a in draws))

    run.vectorized = True
    run.label = f"gibbs(L={num_draws}, warmup={num_warmup}, thinning={thinning})"
    return run


def nuts_sampler(num_draws: int = 99, *, num_warmup: int = 200, thinning: int = 2) -> Sampler:
    """NUTS on the NumPyro model (:func:`bayes_gmm.model.gmm_model`, one chain started at
    the MAP) as an SBC sampler: ``num_draws`` draws kept, one every ``thinning``
    transitions after ``num_warmup`` warm-up (adaptation) ones. Pure, so :func:`sbc` runs
    simulations side by side under ``vmap`` and compiles once per cell.

    It is :func:`bayes_gmm.nuts.run_chains` (NumPyro's NUTS kernel inside one traceable
    function, rather than :class:`numpyro.infer.MCMC`, which builds, traces and compiles
    a sampler per data set), with one chain started where
    :func:`bayes_gmm.posterior.draw` starts it: the MAP (``init_to_value``).
    """

    def run(key, x, prior, init_params, covariance_type):
        from bayes_gmm import nuts  # NumPyro only when asked for

        num_samples = num_draws * thinning
        draws, _, _ = nuts.run_chains(key, x, prior, init_params, covariance_type,
                                      num_chains=1, num_warmup=num_warmup,
                                      num_samples=num_samples, thinning=thinning)
        return GMMParams(*(a[0] for a in draws))

    run.vectorized = True
    # Under vmap a while_loop runs until its slowest lane is done, so every NUTS
    # transition of a batch costs the deepest tree in it: small batches waste less (at
    # N = 50, K = 2, full, on 2 CPU cores, batches of 10 took 0.12 s per simulation, of
    # 40 0.18 s, of 1 0.15 s).
    run.batch_size = 10
    run.label = f"nuts(L={num_draws}, warmup={num_warmup}, thinning={thinning})"
    return run


# --------------------------------------------------------------------------------------
# The procedure


def sbc(
    key,
    prior: GMMPrior,
    *,
    covariance_type: str = "full",
    n_samples: int = 50,
    num_simulations: int = 500,
    sampler: Sampler | None = None,
    num_bins: int = 10,
    alpha: float = 0.01,
    batch_size: int | None = None,
) -> SBCResult:
    """Simulation-based calibration of a posterior sampler of the mixture.

    Parameters
    ----------
    key : jax.Array
        Simulation i uses ``jax.random.fold_in(key, i)``.
    prior : GMMPrior
        A proper prior that does not depend on data, e.g. :func:`sbc_prior`.
    covariance_type : {"full", "tied", "diag", "spherical"}
    n_samples : int, default 50
        N, points per simulated data set.
    num_simulations : int, default 500
    sampler : callable, default ``gibbs_sampler()``
        ``sampler(key, x, prior, init_params, covariance_type)`` -> GMMParams with a
        leading axis of L draws; ``sampler.vectorized`` (default False) says whether it
        may run under ``jax.vmap``. It starts at the MAP of ``x`` (EM, a function of
        ``x`` only, so the start does not favour the true parameters).
    num_bins : int, default 10
        Bins of the chi-square test; the L + 1 rank values are split into ``num_bins``
        nearly equal groups (exactly equal when ``num_bins`` divides L + 1).
    alpha : float, default 0.01
        Family-wise level: a quantity fails when its p-value is below ``alpha / Q``.
    batch_size : int, optional
        Simulations per ``vmap`` batch (vectorised samplers); by default the sampler's
        ``batch_size`` attribute (10 for :func:`nuts_sampler`), else 100.

    Returns
    -------
    SBCResult
    """
    covariance_type = check_covariance_type(covariance_type)
    n_samples = check_int(n_samples, "n_samples", 2)
    num_simulations = check_int(num_simulations, "num_simulations", 2)
    num_bins = check_int(num_bins, "num_bins", 2)
    sampler = gibbs_sampler() if sampler is None else sampler
    if batch_size is None:
        batch_size = getattr(sampler, "batch_size", 100)
    batch_size = min(check_int(batch_size, "batch_size", 1), num_simulations)
    alpha = check_float(alpha, "alpha", 0.0)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be strictly between 0 and 1; got {alpha}.")
    dtype = jnp.result_type(float)
    prior = GMMPrior(*(np.asarray(a, np.float64) for a in prior))
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_simulations))

    def simulate(key):
        theta_key, data_key, map_key, sampler_key = jax.random.split(key, 4)
        theta = sample_prior(theta_key, prior, covariance_type, dtype)
        x, _ = simulate_data(data_key, theta, n_samples, covariance_type)
        start, _ = em.fit_map(map_key, x, prior, covariance_type=covariance_type, n_init=2,
                              max_iter=200)
        return sampler_key, theta, x, start

    def log_likelihoods(x, theta, draws):
        one = lambda p: em.log_likelihood(x, p, covariance_type)  # noqa: E731
        return one(theta), jax.vmap(one)(draws)

    start_time = time.perf_counter()
    outputs = []
    if getattr(sampler, "vectorized", False):

        def one_simulation(key):
            sampler_key, theta, x, start = simulate(key)
            draws = sampler(sampler_key, x, prior, start, covariance_type)
            return (theta, start, draws, *log_likelihoods(x, theta, draws))

        run = jax.jit(jax.vmap(one_simulation))
        for first in range(0, num_simulations, batch_size):
            batch = keys[first:first + batch_size]
            n = batch.shape[0]
            if n < batch_size:  # same shapes every batch: compiled once
                batch = jnp.concatenate([batch, keys[: batch_size - n]])
            out = jax.device_get(run(batch))
            outputs.append(jax.tree.map(lambda a, n=n: np.asarray(a)[:n], out))
    else:
        simulate_all = jax.jit(jax.vmap(simulate))
        likelihoods = jax.jit(log_likelihoods)
        sampler_keys, thetas, xs, starts = simulate_all(keys)
        for i in range(num_simulations):
            pick = lambda a, i=i: a[i]  # noqa: E731
            theta, x, start = (jax.tree.map(pick, t) for t in (thetas, xs, starts))
            draws = sampler(sampler_keys[i], x, prior, start, covariance_type)
            draws = GMMParams(*(jnp.asarray(a, dtype) for a in draws))
            out = (theta, start, draws, *likelihoods(x, theta, draws))
            outputs.append(jax.tree.map(lambda a: np.asarray(a)[None], jax.device_get(out)))
    seconds = time.perf_counter() - start_time
    theta, start, draws, true_loglik, draw_loglik = jax.tree.map(
        lambda *a: np.concatenate(a), *outputs
    )
    num_draws = draws.weights.shape[1]
    if not all(np.all(np.isfinite(a)) for a in (*draws, draw_loglik)):
        bad = int(np.sum(~np.all(np.isfinite(draw_loglik), axis=1)))
        raise FloatingPointError(
            f"the sampler returned non-finite draws in {bad} of {num_simulations} "
            "simulations; SBC needs finite draws (this is itself a failure of the sampler)."
        )

    ranks = {}
    for i in range(num_simulations):
        pivot = GMMParams(*(a[i] for a in start))
        truth = _quantities(GMMParams(*(a[i] for a in theta)), true_loglik[i:i + 1],
                            pivot, covariance_type, single=True)
        sample = _quantities(GMMParams(*(a[i] for a in draws)), draw_loglik[i], pivot,
                             covariance_type)
        for name, value in truth.items():
            ranks.setdefault(name, []).append(int(np.sum(sample[name] < value)))
    ranks = pd.DataFrame(ranks)
    table = uniformity_table(ranks, num_draws, num_bins, alpha)
    settings = {
        "covariance_type": covariance_type,
        "n_components": int(prior.weight_concentration.shape[0]),
        "n_features": int(prior.mean.shape[0]),
        "n_samples": n_samples,
        "num_simulations": num_simulations,
        "num_draws": num_draws,
        "sampler": getattr(sampler, "label", getattr(sampler, "__name__", repr(sampler))),
        "seconds": seconds,
        "dtype": str(np.dtype(dtype)),
    }
    return SBCResult(table, ranks, num_draws, num_bins, alpha, bool(table["passed"].all()),
                     settings)


def uniformity_table(ranks: pd.DataFrame, num_draws: int, num_bins: int = 10,
                     alpha: float = 0.01) -> pd.DataFrame:
    """Chi-square tests of uniformity of ranks in ``0..num_draws``, Bonferroni-corrected.

    Returns a table indexed by quantity with columns ``chi2``, ``dof`` (``num_bins - 1``),
    ``p_value``, ``threshold`` (``alpha / Q``), ``passed`` (``p_value > threshold``) and
    ``min_bin``/``max_bin`` (the smallest and largest bin counts, against ``expected``).
    """
    values = np.asarray(ranks, dtype=np.int64)
    n_sims, n_quantities = values.shape
    # Rank r (of num_draws + 1 equally likely values) falls in bin floor(r B / (L + 1)).
    bins = values * num_bins // (num_draws + 1)
    edges = np.arange(num_draws + 1) * num_bins // (num_draws + 1)
    expected = n_sims * np.bincount(edges, minlength=num_bins) / (num_draws + 1)
    rows = {}
    threshold = alpha / n_quantities
    for j, name in enumerate(ranks.columns):
        observed = np.bincount(bins[:, j], minlength=num_bins)
        chi2 = float(np.sum((observed - expected) ** 2 / expected))
        p_value = float(stats.chi2.sf(chi2, num_bins - 1))
        rows[name] = {"chi2": chi2, "dof": num_bins - 1, "p_value": p_value,
                      "threshold": threshold, "passed": p_value > threshold,
                      "min_bin": int(observed.min()), "max_bin": int(observed.max()),
                      "expected": float(expected.mean())}
    return pd.DataFrame.from_dict(rows, orient="index")


def _quantities(params: GMMParams, log_likelihood, pivot: GMMParams, covariance_type: str,
                single: bool = False) -> dict:
    """Every ranked quantity of ``params`` (leading axis n; n = 1 with ``single``)."""
    weights, means, covariances = (np.asarray(a, np.float64) for a in params)
    if single:
        weights, means, covariances = weights[None], means[None], covariances[None]
    n, k, d = means.shape
    full = _full(covariances, covariance_type, k, d)
    log_det = np.linalg.slogdet(full)[1]  # (n, K)
    out = {"log_likelihood": np.asarray(log_likelihood, np.float64).reshape(n)}
    sorted_weights = np.sort(weights, axis=1)
    sorted_means = np.sort(means[:, :, 0], axis=1)
    sorted_log_det = np.sort(log_det, axis=1)
    for j in range(k):
        out[f"sorted_weights[{j}]"] = sorted_weights[:, j]
    for j in range(k):
        out[f"sorted_means[{j},0]"] = sorted_means[:, j]
    for j in range(1 if covariance_type == "tied" else k):
        out[f"sorted_log_det[{j}]" if covariance_type != "tied" else "log_det"] = (
            sorted_log_det[:, j])
    aligned, _ = align_to_pivot(
        GMMParams(weights[None], means[None], covariances[None]), pivot, covariance_type
    )
    a_weights, a_means = aligned.weights[0], aligned.means[0]
    a_full = _full(aligned.covariances[0], covariance_type, k, d)
    log_variances = np.log(np.diagonal(a_full, axis1=-2, axis2=-1))  # (n, K, D)
    for j in range(k):
        out[f"weights[{j}]"] = a_weights[:, j]
    for j in range(k):
        for f in range(d):
            out[f"means[{j},{f}]"] = a_means[:, j, f]
    for j in range(1 if covariance_type == "tied" else k):
        for f in range(1 if covariance_type == "spherical" else d):
            name = f"log_variance[{f}]" if covariance_type == "tied" else (
                f"log_variance[{j}]" if covariance_type == "spherical"
                else f"log_variance[{j},{f}]")
            out[name] = log_variances[:, j, f]
    return out


def _full(covariances, covariance_type, k, d, xp=np):
    """Covariances of any type, with any leading axes, as (..., K, D, D) matrices."""
    eye = xp.eye(d, dtype=covariances.dtype)
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return xp.broadcast_to(covariances[..., None, :, :], (*covariances.shape[:-2], k, d, d))
    if covariance_type == "diag":
        return covariances[..., :, None] * eye
    return covariances[..., None, None] * eye


# --------------------------------------------------------------------------------------
# The picture


def pit_values(result: SBCResult, seed: int = 0) -> pd.DataFrame:
    """Ranks as PIT values in (0, 1): ``(rank + u) / (L + 1)`` with ``u ~ U(0, 1)``, which
    are continuous uniform exactly when the ranks are discrete uniform."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(size=result.ranks.shape)
    return (result.ranks + u) / (result.num_draws + 1)


def plot_sbc(result: SBCResult, path=None, *, envelope_prob: float = 0.99, seed: int = 0,
             n_band_simulations: int = 1000, ncols: int = 6):
    """ECDF-difference plot of every quantity, with simultaneous bands.

    Each panel shows ``ECDF(PIT) - PIT`` of one quantity over the simulations and the
    band that holds the whole curve of uniform PIT values with probability
    ``envelope_prob``, simultaneously over the curve (Säilynoja et al., 2022). The band
    comes from ArviZ 1.x (``arviz_stats.ecdf_utils.ecdf_pit``, the "envelope" method of
    ``arviz_plots.plot_ecdf_pit``). ``plot_ecdf_pit`` itself is not used: its envelope
    method fails in arviz-plots 1.3 (``numpy.linspace`` is handed an xarray object), so
    the band is drawn here with matplotlib.

    Returns the :class:`matplotlib.figure.Figure`; saves it to ``path`` when given.
    """
    from arviz_stats.ecdf_utils import ecdf_pit
    from matplotlib.figure import Figure

    pit = pit_values(result, seed)
    n_sims, n_quantities = pit.shape
    rng = np.random.default_rng(seed)
    # The band depends only on the number of simulations: one for every panel.
    grid, _, lower, upper = ecdf_pit(np.linspace(0, 1, n_sims), envelope_prob,
                                     n_band_simulations, rng=rng)
    ncols = min(ncols, n_quantities)
    nrows = -(-n_quantities // ncols)
    fig = Figure(figsize=(2.4 * ncols, 2.0 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, name in zip(axes, pit.columns, strict=False):
        values = np.sort(pit[name].to_numpy())
        ecdf = np.searchsorted(values, grid, side="right") / n_sims
        failed = not bool(result.table.loc[name, "passed"])
        ax.fill_between(grid, lower - grid, upper - grid, color="0.85", step="post",
                        linewidth=0)
        ax.step(grid, ecdf - grid, where="post", color="C3" if failed else "C0", lw=1.2)
        ax.axhline(0, color="0.4", lw=0.6)
        ax.set_title(f"{name}\np = {result.table.loc[name, 'p_value']:.2g}", fontsize=8,
                     color="C3" if failed else "black")
        ax.tick_params(labelsize=7)
    for ax in axes[n_quantities:]:
        ax.set_visible(False)
    settings = result.settings
    fig.suptitle(
        f"SBC: {settings.get('sampler', '')}, {settings.get('covariance_type', '')}, "
        f"K = {settings.get('n_components')}, D = {settings.get('n_features')}, "
        f"{n_sims} simulations; ECDF - uniform, {100 * envelope_prob:g}% simultaneous band",
        fontsize=9,
    )
    fig.supxlabel("PIT (rank / (L + 1))", fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


__all__ = [
    "SBCResult",
    "gibbs_sampler",
    "nuts_sampler",
    "plot_sbc",
    "pit_values",
    "sample_prior",
    "sbc",
    "sbc_prior",
    "simulate_data",
    "uniformity_table",
]
