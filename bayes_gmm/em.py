"""The MAP core: EM for a Gaussian mixture under conjugate priors, in pure JAX.

EM climbs the log posterior density ``log p(x | theta) + log p(theta)`` of the model in
:mod:`bayes_gmm.priors` (normalising constants included, theta = (pi, mu, Sigma) in its
natural parametrisation). Each iteration is one pass over the data and one closed-form
M-step:

1. *E-step and statistics, fused.* Rows are processed in chunks by ``lax.scan``. For a
   chunk, one matrix product whitens every point against every component
   (``y_nk = L_k^{-1}(x_n - mu_k)``), the responsibilities follow by ``logsumexp``, and
   the chunk adds its counts ``N_k`` and responsibility-weighted first and second moments
   of ``y`` to running sums. The (N, K, D) temporaries never exist at once, and the
   second moments are centred on the current means and in whitened units, so float32
   loses nothing to the cancellation of uncentred sums.
2. *M-step.* The joint mode of the conjugate posterior given those statistics
   (:func:`m_step`; the formulas and their derivations are in :mod:`bayes_gmm.covariance`).

The loop is one ``lax.while_loop``; it stops when the relative change of the log
posterior falls below ``tol`` or after ``max_iter`` steps, and returns the log posterior
of every step (and, with ``keep_history=True``, the parameters of every step) in fixed
size buffers. ``n_init`` restarts run side by side under ``vmap``; the highest log
posterior wins. Everything is a pure function of its inputs: validation of user input
happens before, in :mod:`bayes_gmm.priors` and the estimator; flags (converged, dead
components) come back in :class:`EMInfo` rather than as exceptions.

A component whose weight reaches zero (possible only when its Dirichlet concentration is
below one: the density is then unbounded at the boundary, and the M-step clips the weight
at zero) has left the model: it gets no responsibility, its weight, mean and covariance
terms leave the log posterior, and ``EMInfo.dead`` reports it.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import gammaln, logsumexp, xlogy

from bayes_gmm.covariance import KINDS, LOG_2PI
from bayes_gmm.priors import GMMPrior

INIT_METHODS = ("k-means++", "random", "random_from_data")

# Rows per chunk are chosen so that a chunk's (C, K, D) temporaries hold about this many
# elements: large enough for an efficient matrix product, small enough to stay in cache.
CHUNK_ELEMENTS = 2**17


class GMMParams(NamedTuple):
    """Parameters of the mixture, in scikit-learn's shapes."""

    weights: jax.Array  # (K,) mixing proportions pi, on the simplex
    means: jax.Array  # (K, D) component means mu_k
    covariances: jax.Array  # full (K, D, D) | tied (D, D) | diag (K, D) | spherical (K,)


class SufficientStats(NamedTuple):
    """Responsibility-weighted statistics of the data, all the M-step needs."""

    counts: jax.Array  # (K,) N_k = sum_n r_nk
    means: jax.Array  # (K, D) xbar_k = sum_n r_nk x_n / N_k
    scatter: jax.Array  # (K, D, D) full/tied | (K, D) diag/spherical: centred S_k (diagonal)


class EMInfo(NamedTuple):
    """Diagnostics of a fit."""

    log_posterior: jax.Array  # () log p(x | theta) + log p(theta) at the returned theta
    log_likelihood: jax.Array  # () log p(x | theta) at the returned theta
    n_iter: jax.Array  # () int32, EM steps taken
    converged: jax.Array  # () bool, relative change of the log posterior fell below tol
    history: jax.Array  # (max_iter + 1,) log posterior after 0..n_iter steps; NaN after
    dead: jax.Array  # (K,) bool, components whose weight is exactly zero
    init_log_posteriors: jax.Array  # (n_init,) final log posterior of every restart
    params_history: GMMParams | None  # leading axis max_iter + 1 (keep_history=True)


class _LoopState(NamedTuple):
    params: GMMParams
    stats: SufficientStats  # statistics of the data under `params`
    log_posterior: jax.Array
    log_likelihood: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    history: jax.Array
    params_history: GMMParams | None


# --------------------------------------------------------------------------------------
# Densities


def log_prior(params: GMMParams, prior: GMMPrior, covariance_type: str = "full") -> jax.Array:
    """log p(pi, mu, Sigma) of the conjugate prior, normalising constants included.

    The Dirichlet density is taken with respect to Lebesgue measure on the first K - 1
    weights (the usual convention, and NumPyro's). Components with zero weight are left
    out (see the module docstring).
    """
    kind = KINDS[covariance_type]
    n_components, n_features = params.means.shape
    factor = kind.factor(params.covariances, n_components, n_features)
    alive = params.weights > 0
    alpha = prior.weight_concentration
    log_dirichlet = (
        gammaln(jnp.sum(jnp.where(alive, alpha, 0.0)))
        - jnp.sum(jnp.where(alive, gammaln(alpha), 0.0))
        + jnp.sum(jnp.where(alive, xlogy(alpha - 1, params.weights), 0.0))
    )
    return log_dirichlet + kind.log_prior_components(params, prior, alive, factor)


def _component_log_prob(y, log_weights, half_log_det):
    """log pi_k + log N(x_n | mu_k, Sigma_k) from whitened residuals y of shape (C, K, D)."""
    n_features = y.shape[-1]
    return log_weights - half_log_det - 0.5 * (n_features * LOG_2PI + jnp.sum(y * y, -1))


@partial(jax.jit, static_argnames=("covariance_type", "chunk_size"))
def e_step(x, params: GMMParams, covariance_type: str = "full", chunk_size: int | None = None):
    """Responsibilities and per-point log densities.

    Parameters
    ----------
    x : Array of shape (n_samples, n_features)
    params : GMMParams
    covariance_type : {"full", "tied", "diag", "spherical"}
    chunk_size : int, optional
        Rows per block; by default about ``CHUNK_ELEMENTS / (K * D)``.

    Returns
    -------
    log_resp : Array of shape (n_samples, n_components)
        ``log r_nk = log pi_k + log N(x_n | mu_k, Sigma_k) - log p(x_n | theta)``.
    log_density : Array of shape (n_samples,)
        ``log p(x_n | theta) = logsumexp_k(log pi_k + log N(x_n | mu_k, Sigma_k))``.
    """
    kind = KINDS[covariance_type]
    n_samples = x.shape[0]
    n_components, n_features = params.means.shape
    factor = kind.factor(params.covariances, n_components, n_features)
    log_weights = jnp.log(params.weights)
    chunk = _chunk_rows(n_samples, n_components, n_features, chunk_size)

    def one_chunk(rows):
        y = kind.whiten(rows, params.means, factor)
        log_prob = _component_log_prob(y, log_weights, factor.half_log_det)
        log_density = logsumexp(log_prob, axis=1)
        return log_prob - log_density[:, None], log_density

    log_resp, log_density = lax.map(one_chunk, _split_rows(x, chunk))
    return (
        log_resp.reshape(-1, n_components)[:n_samples],
        log_density.reshape(-1)[:n_samples],
    )


@partial(jax.jit, static_argnames=("covariance_type",))
def log_likelihood(x, params: GMMParams, covariance_type: str = "full") -> jax.Array:
    """log p(x | theta) = sum_n log sum_k pi_k N(x_n | mu_k, Sigma_k)."""
    return jnp.sum(e_step(x, params, covariance_type)[1])


@partial(jax.jit, static_argnames=("covariance_type",))
def log_posterior(x, params: GMMParams, prior: GMMPrior, covariance_type: str = "full"):
    """The EM objective: ``log p(x | theta) + log p(theta)``, normalising constants included.

    This is the unnormalised log posterior density of the model, the number that the
    NumPyro model's ``log_density`` must reproduce at any theta.
    """
    return log_likelihood(x, params, covariance_type) + log_prior(params, prior, covariance_type)


# --------------------------------------------------------------------------------------
# Statistics and the M-step


def _chunk_rows(n_samples, n_components, n_features, chunk_size):
    if chunk_size is None:
        chunk_size = max(64, CHUNK_ELEMENTS // (n_components * n_features))
    return max(1, min(n_samples, chunk_size))


def _split_rows(a, chunk):
    """(N, ...) -> (ceil(N / chunk), chunk, ...), zero-padded at the end."""
    n_chunks = -(-a.shape[0] // chunk)
    padding = [(0, n_chunks * chunk - a.shape[0])] + [(0, 0)] * (a.ndim - 1)
    return jnp.pad(a, padding).reshape(n_chunks, chunk, *a.shape[1:])


def _finish_statistics(counts, first, second, centres, kind, factor=None):
    """Sufficient statistics in data units from moments of residuals about `centres`.

    ``first`` and ``second`` are the responsibility-weighted first and second moments of
    the residuals ``y`` (whitened by ``factor`` when given). Centring them on their own
    mean happens here, in those units, where the correction is small.
    """
    safe = jnp.where(counts > 0, counts, 1.0)
    offset = first / safe[:, None]
    if kind.diagonal:
        centred = second - counts[:, None] * offset**2
    else:
        centred = second - counts[:, None, None] * offset[:, :, None] * offset[:, None, :]
    if factor is None:
        return SufficientStats(counts, centres + offset, centred)
    return SufficientStats(
        counts,
        centres + kind.unwhiten_vector(offset, factor),
        kind.unwhiten_scatter(centred, factor),
    )


def _expected_statistics(x_chunks, w_chunks, params: GMMParams, covariance_type: str):
    """One pass over the data: the E-step fused with the sufficient statistics.

    Returns the statistics under the responsibilities of ``params`` and the log likelihood
    of ``params``. ``w_chunks`` is 1 for real rows and 0 for padding.
    """
    kind = KINDS[covariance_type]
    n_components, n_features = params.means.shape
    factor = kind.factor(params.covariances, n_components, n_features)
    log_weights = jnp.log(params.weights)
    dtype = x_chunks.dtype

    def add_chunk(totals, chunk):
        rows, row_weights = chunk
        y = kind.whiten(rows, params.means, factor)
        log_prob = _component_log_prob(y, log_weights, factor.half_log_det)
        log_density = logsumexp(log_prob, axis=1)
        r = jnp.exp(log_prob - log_density[:, None]) * row_weights[:, None]
        counts, first, second, loglik = totals
        return (
            counts + jnp.sum(r, 0),
            first + jnp.einsum("ck,ckd->kd", r, y),
            second + kind.second_moment(r, y),
            loglik + row_weights @ log_density,
        ), None

    second_shape = (n_components, n_features) + (() if kind.diagonal else (n_features,))
    zeros = (
        jnp.zeros(n_components, dtype),
        jnp.zeros((n_components, n_features), dtype),
        jnp.zeros(second_shape, dtype),
        jnp.zeros((), dtype),
    )
    (counts, first, second, loglik), _ = lax.scan(add_chunk, zeros, (x_chunks, w_chunks))
    stats = _finish_statistics(counts, first, second, params.means, kind, factor)
    return stats, loglik


def _statistics_from_responsibilities(x_chunks, w_chunks, r_chunks, covariance_type):
    """Two passes: the weighted means, then the scatter centred on them."""
    kind = KINDS[covariance_type]
    r_chunks = r_chunks * w_chunks[..., None]
    counts = jnp.sum(r_chunks, (0, 1))
    sums = jnp.einsum("nck,ncd->kd", r_chunks, x_chunks)
    means = sums / jnp.where(counts > 0, counts, 1.0)[:, None]

    def add_chunk(totals, chunk):
        rows, r = chunk
        y = rows[:, None, :] - means[None]
        first, second = totals
        return (first + jnp.einsum("ck,ckd->kd", r, y), second + kind.second_moment(r, y)), None

    n_components, n_features = means.shape
    second_shape = (n_components, n_features) + (() if kind.diagonal else (n_features,))
    zeros = (jnp.zeros_like(means), jnp.zeros(second_shape, means.dtype))
    (first, second), _ = lax.scan(add_chunk, zeros, (x_chunks, r_chunks))
    return _finish_statistics(counts, first, second, means, kind)


@partial(jax.jit, static_argnames=("covariance_type", "chunk_size"))
def statistics(x, resp, covariance_type: str = "full", chunk_size: int | None = None):
    """Sufficient statistics of ``x`` under responsibilities ``resp`` of shape (N, K)."""
    n_samples, n_features = x.shape
    chunk = _chunk_rows(n_samples, resp.shape[1], n_features, chunk_size)
    return _statistics_from_responsibilities(
        _split_rows(x, chunk),
        _split_rows(jnp.ones(n_samples, x.dtype), chunk),
        _split_rows(resp.astype(x.dtype), chunk),
        covariance_type,
    )


@partial(jax.jit, static_argnames=("covariance_type",))
def m_step(stats: SufficientStats, prior: GMMPrior, covariance_type: str = "full") -> GMMParams:
    r"""The joint posterior mode given sufficient statistics.

    .. math::
        \pi_k \propto \max(N_k + \alpha_k - 1, 0), \qquad
        \mu_k = \frac{\kappa_0 m_0 + N_k \bar x_k}{\kappa_0 + N_k}

    and the covariance update of the type (:mod:`bayes_gmm.covariance`). With every
    ``alpha_k >= 1`` the weights are ``(N_k + alpha_k - 1) / (N + sum(alpha) - K)``, the
    maximiser of the Dirichlet-weighted objective; below one, that objective is unbounded
    as ``pi_k -> 0`` whenever ``N_k < 1 - alpha_k``, and clipping at zero removes the
    component (Figueiredo and Jain, 2002).

    References
    ----------
    Fraley, C. and Raftery, A. E. (2007). Bayesian regularization for normal mixture
    estimation and model-based clustering. Journal of Classification 24, 155-181.
    Figueiredo, M. A. T. and Jain, A. K. (2002). Unsupervised learning of finite mixture
    models. IEEE Transactions on Pattern Analysis and Machine Intelligence 24, 381-396.
    """
    kind = KINDS[covariance_type]
    counts = stats.counts
    unnormalised = jnp.maximum(counts + prior.weight_concentration - 1, 0.0)
    weights = unnormalised / jnp.sum(unnormalised)
    kappa0 = prior.mean_precision
    kappa = kappa0 + counts
    means = (kappa0 * prior.mean + counts[:, None] * stats.means) / kappa[:, None]
    deviation = stats.means - prior.mean
    shrinkage = kappa0 * counts / kappa
    covariances = kind.map_covariance(
        counts, stats.scatter, deviation, shrinkage, weights > 0, prior
    )
    return GMMParams(weights, means, covariances)


# --------------------------------------------------------------------------------------
# Initialisation


def _squared_distances(x, centres):
    """|x_n - c_j|^2 of shape (N, J) by one matrix product (clipped: it may round below 0)."""
    d2 = (
        jnp.sum(x * x, 1)[:, None]
        - 2 * x @ centres.T
        + jnp.sum(centres * centres, 1)[None, :]
    )
    return jnp.maximum(d2, 0.0)


def _nearest_centre(x, centres):
    """Hard responsibilities: one-hot of the nearest centre, shape (N, K)."""
    labels = jnp.argmin(_squared_distances(x, centres), axis=1)
    return jax.nn.one_hot(labels, centres.shape[0], dtype=x.dtype)


def _kmeans_plus_plus(key, x, n_components):
    """Greedy k-means++ seeding (Arthur and Vassilvitskii, 2007), as scikit-learn does it.

    Each new centre is the best, by total squared distance, of ``2 + log K`` candidates
    drawn with probability proportional to the squared distance to the nearest centre.
    """
    n_trials = 2 + int(math.log(n_components))
    first_key, key = jax.random.split(key)
    first = jax.random.randint(first_key, (), 0, x.shape[0])
    centres = jnp.zeros((n_components, x.shape[1]), x.dtype).at[0].set(x[first])
    closest = _squared_distances(x, x[first][None])[:, 0]

    def add_centre(j, carry):
        centres, closest, key = carry
        key, trial_key = jax.random.split(key)
        # All distances zero (every point identical): fall back to a uniform draw.
        logits = jnp.where(jnp.any(closest > 0), jnp.log(closest), 0.0)
        candidates = jax.random.categorical(trial_key, logits, shape=(n_trials,))
        trial_closest = jnp.minimum(closest[None], _squared_distances(x, x[candidates]).T)
        best = jnp.argmin(jnp.sum(trial_closest, 1))
        return centres.at[j].set(x[candidates[best]]), trial_closest[best], key

    centres, _, _ = lax.fori_loop(1, n_components, add_centre, (centres, closest, key))
    return centres


def _initial_responsibilities(key, x, n_components, method):
    if method == "random":
        # Random soft assignments: every component starts near the data mean with a
        # covariance close to the data's (the "diffuse" start of the classic tutorial).
        r = jax.random.uniform(key, (x.shape[0], n_components), x.dtype)
        return r / jnp.sum(r, 1, keepdims=True)
    if method == "random_from_data":
        idx = jax.random.choice(key, x.shape[0], (n_components,), replace=False)
        return _nearest_centre(x, x[idx])
    return _nearest_centre(x, _kmeans_plus_plus(key, x, n_components))


def _initial_params(key, x, x_chunks, w_chunks, prior, covariance_type, method, given):
    """Start from ``given`` where it says, else from the M-step after ``method``.

    With given means but no weights or covariances, the points are assigned to the
    nearest given mean and the M-step fills in the rest; the given fields are kept.
    """
    if given is not None and all(field is not None for field in given):
        return given
    n_components = prior.weight_concentration.shape[0]
    if given is not None and given.means is not None:
        resp = _nearest_centre(x, given.means)
    else:
        resp = _initial_responsibilities(key, x, n_components, method)
    chunk = x_chunks.shape[1]
    stats = _statistics_from_responsibilities(
        x_chunks, w_chunks, _split_rows(resp, chunk), covariance_type
    )
    params = m_step(stats, prior, covariance_type)
    if given is not None:
        params = GMMParams(*(g if g is not None else p for g, p in zip(given, params, strict=True)))
    return params


# --------------------------------------------------------------------------------------
# The loop


def _em_loop(params, x_chunks, w_chunks, prior, covariance_type, max_iter, tol, keep_history):
    def evaluate(params):
        stats, loglik = _expected_statistics(x_chunks, w_chunks, params, covariance_type)
        return stats, loglik, loglik + log_prior(params, prior, covariance_type)

    stats, loglik, lp = evaluate(params)
    history = jnp.full(max_iter + 1, jnp.nan, lp.dtype).at[0].set(lp)
    params_history = None
    if keep_history:
        params_history = jax.tree.map(
            lambda a: jnp.zeros((max_iter + 1, *a.shape), a.dtype).at[0].set(a), params
        )
    state = _LoopState(
        params, stats, lp, loglik, jnp.int32(0), jnp.bool_(False), history, params_history
    )

    def keep_going(state):
        return (
            (state.n_iter < max_iter)
            & ~state.converged
            & jnp.isfinite(state.log_posterior)
        )

    def step(state):
        params = m_step(state.stats, prior, covariance_type)
        stats, loglik, lp = evaluate(params)
        n_iter = state.n_iter + 1
        change = jnp.abs(lp - state.log_posterior)
        params_history = state.params_history
        if keep_history:
            params_history = jax.tree.map(
                lambda h, a: h.at[n_iter].set(a), params_history, params
            )
        return _LoopState(
            params,
            stats,
            lp,
            loglik,
            n_iter,
            change <= tol * jnp.abs(lp),
            state.history.at[n_iter].set(lp),
            params_history,
        )

    return lax.while_loop(keep_going, step, state)


def _check_static(x, prior, covariance_type, init, n_init, max_iter):
    """Checks of types and shapes only: free at trace time, nothing data-dependent."""
    if covariance_type not in KINDS:
        raise ValueError(
            f"covariance_type must be one of {', '.join(map(repr, KINDS))}; "
            f"got {covariance_type!r}."
        )
    if init not in INIT_METHODS:
        raise ValueError(
            f"init must be one of {', '.join(map(repr, INIT_METHODS))}; got {init!r}."
        )
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n_samples, n_features); got shape {x.shape}.")
    n_features = x.shape[1]
    expected = {"full": (n_features, n_features), "tied": (n_features, n_features),
                "diag": (n_features,), "spherical": ()}[covariance_type]
    if prior.mean.shape != (n_features,) or prior.covariance.shape != expected:
        raise ValueError(
            f"prior does not match the data and covariance_type={covariance_type!r}: "
            f"expected mean of shape ({n_features},) and covariance of shape {expected}; "
            f"got {prior.mean.shape} and {prior.covariance.shape}. "
            "Build it with bayes_gmm.default_prior(x, n_components, covariance_type)."
        )
    if n_init < 1 or max_iter < 0:
        raise ValueError(f"need n_init >= 1 and max_iter >= 0; got {n_init} and {max_iter}.")


def fit_map(
    key,
    x,
    prior: GMMPrior,
    init_params: GMMParams | None = None,
    *,
    covariance_type: str = "full",
    init: str = "k-means++",
    n_init: int = 1,
    max_iter: int = 100,
    tol=1e-6,
    keep_history: bool = False,
    chunk_size: int | None = None,
) -> tuple[GMMParams, EMInfo]:
    """The MAP estimate of the mixture by EM.

    Pure and jitted: usable under ``jax.jit`` and ``jax.vmap`` (over keys, data or
    priors). A second call with the same shapes and the same settings (the keyword
    arguments other than ``tol``) does not re-trace.

    Parameters
    ----------
    key : jax.Array
        PRNG key for the initialisation.
    x : Array of shape (n_samples, n_features)
        Finite data; its floating dtype is the dtype of every result.
    prior : GMMPrior
        From :func:`bayes_gmm.default_prior`; K is ``prior.weight_concentration.shape[0]``.
    init_params : GMMParams, optional
        Starting values; any field may be ``None`` to initialise it (see
        :func:`_initial_params`). With all three fields given, ``init`` and ``n_init``
        are ignored.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
    init : {"k-means++", "random", "random_from_data"}, default "k-means++"
        k-means++ seeding, random soft responsibilities, or K distinct data points as
        centres; points are then assigned and the M-step gives the starting parameters.
    n_init : int, default 1
        Restarts from independent initialisations, run in parallel with ``vmap``.
    max_iter : int, default 100
        EM steps at most (the size of the history buffers).
    tol : float, default 1e-6
        Stop when ``|lp_t - lp_{t-1}| <= tol * |lp_t|`` for the log posterior ``lp``.
    keep_history : bool, default False
        Also return the parameters after every step (``EMInfo.params_history``).
    chunk_size : int, optional
        Rows per block of the fused E-step.

    Returns
    -------
    params : GMMParams
        The MAP estimate of the best restart.
    info : EMInfo
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    _check_static(x, prior, covariance_type, init, n_init, max_iter)
    # Every argument explicit: jit keys its cache on which keywords were passed.
    return _fit_map(
        key, x, prior, init_params, tol, covariance_type, init, n_init, max_iter,
        keep_history, chunk_size,
    )


@partial(jax.jit, static_argnums=(5, 6, 7, 8, 9, 10))
def _fit_map(
    key, x, prior, init_params, tol, covariance_type, init, n_init, max_iter, keep_history,
    chunk_size,
):
    dtype = x.dtype
    prior = GMMPrior(*(jnp.asarray(a, dtype) for a in prior))
    n_samples, n_features = x.shape
    n_components = prior.weight_concentration.shape[0]

    # Work in the frame centred on the data mean. The model is translation invariant,
    # and the whitening product x @ L^{-T} - mu @ L^{-T} would otherwise lose every digit
    # that an offset of the data far from the origin takes (float32 especially).
    shift = jnp.mean(x, axis=0)
    centred = x - shift
    prior = prior._replace(mean=prior.mean - shift)
    given = None
    if init_params is not None:
        given = GMMParams(*(None if a is None else jnp.asarray(a, dtype) for a in init_params))
        if given.means is not None:
            given = given._replace(means=given.means - shift)
        if all(field is not None for field in given):
            n_init = 1

    chunk = _chunk_rows(n_samples, n_components, n_features, chunk_size)
    x_chunks = _split_rows(centred, chunk)
    w_chunks = _split_rows(jnp.ones(n_samples, dtype), chunk)

    def run(key):
        params = _initial_params(
            key, centred, x_chunks, w_chunks, prior, covariance_type, init, given
        )
        return _em_loop(
            params, x_chunks, w_chunks, prior, covariance_type, max_iter,
            jnp.asarray(tol, dtype), keep_history,
        )

    states = jax.vmap(run)(jax.random.split(key, n_init))
    finals = states.log_posterior
    best = jnp.argmax(jnp.where(jnp.isnan(finals), -jnp.inf, finals))
    state = jax.tree.map(lambda a: a[best], states)

    params = state.params._replace(means=state.params.means + shift)
    params_history = state.params_history
    if keep_history:
        params_history = params_history._replace(means=params_history.means + shift)
    info = EMInfo(
        log_posterior=state.log_posterior,
        log_likelihood=state.log_likelihood,
        n_iter=state.n_iter,
        converged=state.converged,
        history=state.history,
        dead=params.weights <= 0,
        init_log_posteriors=finals,
        params_history=params_history,
    )
    return params, info
