"""The MAP core: EM for a Gaussian mixture under conjugate priors, in pure JAX.

EM climbs the log posterior density ``log p(x | theta) + log p(theta)`` of the model in
:mod:`bayes_gmm.priors` (normalising constants included, theta = (pi, mu, Sigma) in its
natural parametrisation). Each iteration is one pass over the data and one closed-form
M-step:

1. *E-step and statistics, fused.* Points are processed in chunks of about 10^4 by
   ``lax.scan``, stored feature-major (a chunk is (D + 1, C): the coordinates, then a row
   mask that is 0 for the padding of the last chunk; see :mod:`bayes_gmm.covariance`).
   For a chunk, one matrix product whitens every point against every component
   (``y_kn = L_k^{-1}(x_n - mu_k)``), the responsibilities follow by a softmax over
   components, and (for full and tied covariances) a second matrix product adds the
   chunk's counts ``N_k`` and responsibility-weighted first and second moments of ``y``
   to running sums. The (N, K, D) temporaries never exist at once, and the moments are
   taken about the current means and in whitened units, so float32 loses nothing to the
   cancellation of uncentred sums.
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

A pass is a sum over chunks, so it splits: :func:`_statistics_pass` gives the per-chunk
function and the finish, and the same two serve the rows split over several devices
(:mod:`bayes_gmm.sharding`, one all-reduce per pass) and data streamed from disk
(:mod:`bayes_gmm.streaming`, one compiled call per block read).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import gammaln, logsumexp, xlogy

from bayes_gmm import padding, program_store
from bayes_gmm.covariance import KINDS, LOG_2PI
from bayes_gmm.initialization import INIT_METHODS, initial_responsibilities, nearest_centre
from bayes_gmm.priors import GMMPrior
from bayes_gmm.sharding import device_chunks, resolve_mesh, rows_per_device, sum_over_devices

# Points per chunk are chosen so that a chunk's (K, D, C) temporaries hold about this many
# elements (4 MB in float32). Every chunk costs a dozen kernel launches, so much smaller
# chunks are slower (1.2-1.4x at a tenth of this, N = 1e6, K = D = 10, two cores), and
# much larger ones leave the last-level cache.
CHUNK_ELEMENTS = 2**20


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


for _tree in (GMMParams, EMInfo, GMMPrior):
    program_store.register_pytree(_tree)


class _LoopState(NamedTuple):
    params: GMMParams  # the parameters that log_posterior and history[n_iter] belong to
    next_params: GMMParams  # the M-step from `params`: where the next pass starts
    log_posterior: jax.Array
    log_likelihood: jax.Array
    n_iter: jax.Array  # EM steps that led to `params`; -1 before the first pass
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
    # Every log-gamma of the prior in one call: each call of gammaln compiles to some
    # twenty kernels (JAX's float32 lgamma), a fifth of an EM program's compile time when
    # the Dirichlet and the covariance prior called it three times.
    arguments = jnp.concatenate([
        jnp.sum(jnp.where(alive, alpha, 0.0))[None], alpha,
        kind.log_gamma_arguments(prior, n_features),
    ])
    log_gammas = gammaln(arguments)
    log_dirichlet = (
        log_gammas[0]
        - jnp.sum(jnp.where(alive, log_gammas[1 : n_components + 1], 0.0))
        + jnp.sum(jnp.where(alive, xlogy(alpha - 1, params.weights), 0.0))
    )
    return log_dirichlet + kind.log_prior_components(
        params, prior, alive, factor, log_gammas[n_components + 1 :]
    )


def _log_normaliser(log_weights, half_log_det, n_features):
    """log pi_k - 0.5 log |2 pi Sigma_k|, shape (K,); -inf for a slot of weight zero (a
    dead or padded component) whatever its covariance, which may not factorise."""
    return jnp.where(log_weights == -jnp.inf, -jnp.inf,
                     log_weights - half_log_det - 0.5 * n_features * LOG_2PI)


def _component_log_prob(y, log_norm):
    """log pi_k + log N(x_n | mu_k, Sigma_k), shape (K, C), from whitened residuals y of
    shape (K, D, C). A slot of weight zero stays at -inf: its residuals may be NaN (a
    padded slot of the Gibbs sampler holds a prior draw that float32 cannot factorise)."""
    dead = log_norm[:, None] == -jnp.inf
    return jnp.where(dead, -jnp.inf, log_norm[:, None] - 0.5 * jnp.sum(y * y, axis=1))


@partial(jax.jit, static_argnames=("covariance_type", "chunk_size"))
def e_step(x, params: GMMParams, covariance_type: str = "full", chunk_size: int | None = None):
    """Responsibilities and per-point log densities.

    Parameters
    ----------
    x : Array of shape (n_samples, n_features)
    params : GMMParams
    covariance_type : {"full", "tied", "diag", "spherical"}
    chunk_size : int, optional
        Points per block; by default about ``CHUNK_ELEMENTS / (K * D)``.

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
    whitening = kind.whitening(params.means, factor)
    log_norm = _log_normaliser(jnp.log(params.weights), factor.half_log_det, n_features)
    chunk = _chunk_rows(n_samples, n_components, n_features, chunk_size)

    def one_chunk(points):
        log_prob = _component_log_prob(kind.whiten(points, whitening), log_norm)
        log_density = logsumexp(log_prob, axis=0)
        return (log_prob - log_density).T, log_density

    log_resp, log_density = lax.map(one_chunk, _feature_major(x, chunk))
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


def _feature_major(x, chunk, row_mask=None):
    """(N, D) -> (ceil(N / chunk), D + 1, chunk): the points of a chunk on the minor axis,
    then a row mask, 1 for the points (``row_mask``, default all rows) and 0 for padding."""
    mask = jnp.ones((x.shape[0], 1), x.dtype) if row_mask is None else row_mask[:, None]
    return jnp.swapaxes(_split_rows(jnp.concatenate([x, mask], axis=1), chunk), 1, 2)


def _responsibility_chunks(resp, chunk):
    """(N, K) -> (ceil(N / chunk), K, chunk), zero for the padding."""
    return jnp.swapaxes(_split_rows(resp, chunk), 1, 2)


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


def _scan_chunks(chunk_fn, chunks):
    """Run ``chunk_fn`` over the leading axis of ``chunks`` with ``lax.scan``, one chunk's
    temporaries at a time: its first output (a pytree) is summed, its second stacked."""
    chunk = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), chunks)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(chunk_fn, chunk)[0])

    def step(totals, chunk):
        sums, out = chunk_fn(chunk)
        return jax.tree.map(jnp.add, totals, sums), out

    return lax.scan(step, zeros, chunks)


def _statistics_pass(params: GMMParams, covariance_type: str):
    """The two halves of one pass over the data under ``params``.

    Returns ``one_chunk``, which maps a feature-major chunk (D + 1, C) to its summed
    moments and the sum of its points' log densities less a reference, and ``finish``,
    which turns the moments summed over every chunk (and over devices, or over the chunks
    read from disk) and those sums of log densities into statistics and a log likelihood.
    """
    kind = KINDS[covariance_type]
    n_components, n_features = params.means.shape
    factor = kind.factor(params.covariances, n_components, n_features)
    whitening = kind.whitening(params.means, factor)
    log_norm = _log_normaliser(jnp.log(params.weights), factor.half_log_det, n_features)
    # A round number near a typical log density. The points' log densities are summed as
    # deviations from it (small numbers, so small rounding errors) and it is added back
    # once, exactly: in float32 this cuts the error of the log likelihood from about 0.55
    # to 0.35 units in its last place, and the convergence test differences two of them.
    reference = jnp.round(jnp.max(log_norm) - 0.5 * n_features)

    def one_chunk(points):
        y = kind.whiten(points, whitening)
        log_prob = _component_log_prob(y, log_norm)
        # logsumexp written out (its guard against an all -inf column included), so that
        # the one exp also gives the responsibilities.
        top = jnp.max(log_prob, axis=0)
        top = jnp.where(jnp.isfinite(top), top, 0.0)
        scaled = jnp.exp(log_prob - top)
        total = jnp.sum(scaled, axis=0)
        mask = points[n_features]
        r = scaled * (mask / total)
        log_density = top + jnp.log(total)
        return kind.moments(r, y, points), jnp.sum(mask * (log_density - reference))

    def finish(sums, n_samples, deviations):
        counts, first, second = kind.totals(sums, whitening)
        stats = _finish_statistics(counts, first, second, params.means, kind, factor)
        # Summed at the end (a tree reduction) rather than carried: a running float32 sum
        # over many chunks would lose digits of the 1e-6 relative change `tol` compares.
        return stats, n_samples * reference + jnp.sum(deviations)

    return one_chunk, finish


def _sum_chunks(chunk_fn, chunks, mesh=None):
    """:func:`_scan_chunks` on one device; with a ``mesh``, ``chunks`` has a leading
    device axis and every device scans its own chunks (:mod:`bayes_gmm.sharding`)."""
    if mesh is None:
        return _scan_chunks(chunk_fn, chunks)
    return sum_over_devices(partial(_scan_chunks, chunk_fn), mesh, chunks)


def _expected_statistics(x_chunks, n_samples, params: GMMParams, covariance_type: str,
                         mesh=None):
    """One pass over the data: the E-step fused with the sufficient statistics.

    Returns the statistics under the responsibilities of ``params`` and the log likelihood
    of ``params``. ``x_chunks`` is (n_chunks, D + 1, C) from :func:`_feature_major`, holding
    ``n_samples`` points (with a ``mesh``: (n_devices, n_chunks, D + 1, C)).
    """
    one_chunk, finish = _statistics_pass(params, covariance_type)
    sums, chunk_logliks = _sum_chunks(one_chunk, x_chunks, mesh)
    return finish(sums, n_samples, chunk_logliks)


def _statistics_from_responsibilities(x_chunks, r_chunks, covariance_type, mesh=None):
    """Two passes: the weighted means, then the moments about them (in data units).

    ``r_chunks`` is (n_chunks, K, C), zero for the padding (with a ``mesh``, both have a
    leading device axis).
    """
    kind = KINDS[covariance_type]
    n_features = x_chunks.shape[-2] - 1

    def weighted_sums(chunks):
        x_chunks, r_chunks = chunks
        counts = jnp.sum(r_chunks, (0, 2))
        return (counts, jnp.einsum("nkc,ndc->kd", r_chunks, x_chunks[:, :n_features])), None

    if mesh is None:
        (counts, sums), _ = weighted_sums((x_chunks, r_chunks))
    else:
        (counts, sums), _ = sum_over_devices(weighted_sums, mesh, (x_chunks, r_chunks))
    means = sums / jnp.where(counts > 0, counts, 1.0)[:, None]
    whitening = kind.whitening(means, None)

    def one_chunk(chunk):
        points, r = chunk
        return kind.moments(r, kind.whiten(points, whitening), points), None

    sums, _ = _sum_chunks(one_chunk, (x_chunks, r_chunks), mesh)
    counts, first, second = kind.totals(sums, whitening)
    return _finish_statistics(counts, first, second, means, kind)


@partial(jax.jit, static_argnames=("covariance_type", "chunk_size"))
def statistics(x, resp, covariance_type: str = "full", chunk_size: int | None = None):
    """Sufficient statistics of ``x`` under responsibilities ``resp`` of shape (N, K)."""
    n_samples, n_features = x.shape
    chunk = _chunk_rows(n_samples, resp.shape[1], n_features, chunk_size)
    return _statistics_from_responsibilities(
        _feature_major(x, chunk),
        _responsibility_chunks(resp.astype(x.dtype), chunk),
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
    alpha = prior.weight_concentration
    # A slot of concentration zero is padding (bayes_gmm.padding): it keeps weight zero.
    unnormalised = jnp.where(alpha > 0, jnp.maximum(counts + alpha - 1, 0.0), 0.0)
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


def _initial_params(key, x, row_mask, x_chunks, prior, covariance_type, method, given,
                    mesh=None):
    """Start from ``given`` where it says, else from the M-step after ``method``.

    With given means but no weights or covariances, the points are assigned to the
    nearest given mean and the M-step fills in the rest; the given fields are kept.
    ``x`` may be padded (``row_mask``, and component slots whose concentration is zero:
    :mod:`bayes_gmm.padding`).
    """
    if given is not None and all(field is not None for field in given):
        return given
    n_slots = prior.weight_concentration.shape[0]
    n_components = jnp.sum(prior.weight_concentration > 0)
    if given is not None and given.means is not None:
        resp = nearest_centre(x, given.means, n_components) * row_mask[:, None]
    else:
        resp = initial_responsibilities(key, x, n_components, method, row_mask, n_slots)
    if mesh is None:
        r_chunks = _responsibility_chunks(resp, x_chunks.shape[-1])
    else:
        r_chunks = device_chunks(resp, mesh, x_chunks.shape[-1])
    stats = _statistics_from_responsibilities(x_chunks, r_chunks, covariance_type, mesh)
    params = m_step(stats, prior, covariance_type)
    if given is not None:
        params = GMMParams(*(g if g is not None else p for g, p in zip(given, params, strict=True)))
    return params


# --------------------------------------------------------------------------------------
# The loop


def _keep_going(state: _LoopState, max_iter) -> jax.Array:
    return (state.n_iter < max_iter) & ~state.converged & jnp.isfinite(state.log_posterior)


def _em_update(state: _LoopState, stats, loglik, prior, covariance_type, tol, keep_history):
    """Record the pass over the data from ``state.next_params`` (its statistics and log
    likelihood) and take the M-step from them."""
    params = state.next_params
    lp = loglik + log_prior(params, prior, covariance_type)
    n_iter = state.n_iter + 1
    change = jnp.abs(lp - state.log_posterior)
    params_history = state.params_history
    if keep_history:
        params_history = jax.tree.map(lambda h, a: h.at[n_iter].set(a), params_history, params)
    return _LoopState(
        params,
        m_step(stats, prior, covariance_type),
        lp,
        loglik,
        n_iter,
        (n_iter > 0) & (change <= tol * jnp.abs(lp)),
        state.history.at[n_iter].set(lp),
        params_history,
    )


def history_length(max_iter: int, keep_history: bool = False) -> int:
    """The length of EM's history buffers for ``max_iter`` steps: a power of two above
    ``max_iter`` (at least 1024, or 64 where the parameters of every step are kept), so
    that one compiled program serves every ``max_iter`` up to it (``max_iter`` itself is
    an argument of the program, not part of its shape). Results are cut to
    ``max_iter + 1`` steps outside the program."""
    return max(64 if keep_history else 1024, 1 << max_iter.bit_length())


def _start_state(params, length, keep_history, dtype) -> _LoopState:
    """The loop's state before the first pass, with history buffers of ``length`` steps."""
    zero = jnp.zeros((), dtype)
    params_history = None
    if keep_history:
        params_history = jax.tree.map(lambda a: jnp.zeros((length, *a.shape), a.dtype), params)
    return _LoopState(
        params, params, zero, zero, jnp.int32(-1), jnp.bool_(False),
        jnp.full(length, jnp.nan, dtype), params_history,
    )


def _em_loop(params, x_chunks, n_samples, prior, covariance_type, max_iter, length, tol,
             keep_history, mesh=None):
    # Every pass of the loop evaluates the parameters it is handed (the pass over the data)
    # and takes the M-step from them. The starting parameters go through the same pass, so
    # the program holds a single copy of it: XLA's compile time grows with program size.
    state = _start_state(params, length, keep_history, x_chunks.dtype)

    def step(state):
        stats, loglik = _expected_statistics(
            x_chunks, n_samples, state.next_params, covariance_type, mesh
        )
        return _em_update(state, stats, loglik, prior, covariance_type, tol, keep_history)

    return lax.while_loop(lambda state: _keep_going(state, max_iter), step, state)


def check_fit_arguments(x, prior, covariance_type, init, n_init, max_iter):
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


_check_static = check_fit_arguments  # the former name, kept for other modules


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
    mesh="auto",
) -> tuple[GMMParams, EMInfo]:
    """The MAP estimate of the mixture by EM.

    Pure and jitted: usable under ``jax.jit`` and ``jax.vmap`` (over keys, data or
    priors). A second call with the same shapes and the same settings (the keyword
    arguments other than ``tol``) does not re-trace.

    Data larger than memory: pass a chunked source for ``x`` (a ``numpy.memmap``, a path
    to a ``.npy`` file or to a directory of ``.npy`` shards, a list of arrays, a
    zero-argument callable returning a fresh iterator of arrays, or a
    :class:`bayes_gmm.streaming.ChunkedSource`), and the data are streamed from it, one
    pass per EM step; see :func:`bayes_gmm.streaming.fit_map_streaming` for what differs.
    Several devices: the rows are split over them (:mod:`bayes_gmm.sharding`).

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
        Rows per block of the fused E-step (for a chunked source: rows read at a time).
    mesh : "auto", jax.sharding.Mesh or None, default "auto"
        Devices to split the rows over: a 1-D mesh; "auto" uses every device of
        ``jax.devices()`` when there are several, None keeps one device. The result
        equals the one-device fit to rounding.

    Returns
    -------
    params : GMMParams
        The MAP estimate of the best restart.
    info : EMInfo
    """
    from bayes_gmm import streaming  # it builds on this module

    if streaming.is_chunked(x):
        return streaming.fit_map_streaming(
            key, x, prior, init_params, covariance_type=covariance_type, init=init,
            n_init=n_init, max_iter=max_iter, tol=tol, keep_history=keep_history,
            chunk_size=chunk_size, mesh=mesh,
        )
    x = as_data(x)
    _check_static(x, prior, covariance_type, init, n_init, max_iter)
    mesh = resolve_mesh(mesh)
    n_samples, n_features = x.shape
    n_components = prior.weight_concentration.shape[0]
    rows, slots = n_samples, n_components
    if mesh is None:
        rows, slots = padding.padded_shape(n_samples, n_components, n_features)
    x_padded, row_mask = padding.pad_rows(x, rows)
    if init_params is not None:
        init_params = padding.pad_params(GMMParams(*init_params), slots, covariance_type)
    # Every argument explicit: jit keys its cache on which keywords were passed.
    params, info = _fit_map(
        key, x_padded, row_mask, padding.pad_prior(prior, slots), init_params, tol,
        np.int32(max_iter), covariance_type, init, n_init,
        history_length(max_iter, keep_history), keep_history, chunk_size, mesh,
    )
    return _unpadded(params, info, n_components, covariance_type, max_iter)


def as_data(x):
    """``x`` as a floating array of JAX's dtype for it; a NumPy array stays in NumPy (an
    eager JAX conversion would compile a small program per shape)."""
    if isinstance(x, jax.Array):
        return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(float)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return x.astype(jnp.result_type(float))
    return x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)


def _unpadded(params, info, n_components, covariance_type, max_iter):
    """The first ``n_components`` components of a fit in padded slots, and its history
    cut to ``max_iter`` steps (its buffer is longer: :func:`history_length`)."""
    history = info.params_history
    if history is not None:
        history = padding.unpad_params(history, n_components, covariance_type, axis=1)
        history = jax.tree.map(lambda a: padding.unpad_axis(a, max_iter + 1, 0), history)
    info = info._replace(dead=padding.unpad_components(info.dead, n_components),
                         history=padding.unpad_axis(info.history, max_iter + 1, 0),
                         params_history=history)
    return padding.unpad_params(params, n_components, covariance_type), info


def fit_map_batch(
    keys,
    x,
    priors,
    *,
    covariance_type: str = "full",
    init: str = "k-means++",
    n_init: int = 1,
    max_iter: int = 100,
    tol=1e-6,
    rows: int | None = None,
) -> list[tuple[GMMParams, EMInfo]]:
    """MAP fits of ``x`` under several priors (of any numbers of components), as one
    compiled, vmapped program.

    The priors are padded to a common number of component slots
    (:mod:`bayes_gmm.padding`), so a grid of K values runs as a single program, and
    another grid of the same data width, dtype and row bucket reuses it. Each result
    equals ``fit_map(keys[i], x, priors[i], ...)`` to rounding.

    Parameters
    ----------
    keys : sequence of PRNG keys, or a key array of shape (n_priors,)
    x : Array of shape (n_samples, n_features)
    priors : sequence of GMMPrior
        All for ``covariance_type`` and ``n_features``; K may differ.
    covariance_type, init, n_init, max_iter, tol
        As in :func:`fit_map`.
    rows : int, optional
        Pad the data to at least this many rows (a bucket of :mod:`bayes_gmm.padding`),
        so that fits of a subset (held-out training points) share the full data's
        program; by default the bucket of ``x``.

    Returns
    -------
    list of (GMMParams, EMInfo)
        One per prior, with that prior's K components.
    """
    x = as_data(x)
    if not len(priors):
        raise ValueError("priors must hold at least one GMMPrior; got none.")
    for prior in priors:
        _check_static(x, prior, covariance_type, init, n_init, max_iter)
    sizes = [prior.weight_concentration.shape[0] for prior in priors]
    bucket, slots = padding.padded_shape(x.shape[0], max(sizes), x.shape[1])
    slots = max(slots, max(sizes))
    rows = bucket if rows is None or bucket == x.shape[0] else max(rows, bucket)
    x_padded, row_mask = padding.pad_rows(x, rows)
    stacked = GMMPrior(*(np.stack(fields) for fields in zip(
        *(padding.pad_prior(GMMPrior(*(np.asarray(a, np.float64) for a in prior)), slots)
          for prior in priors), strict=True)))
    keys = list(keys) if isinstance(keys, list | tuple) else keys
    params, info = _fit_map_batch(
        keys, x_padded, row_mask, stacked, None, tol, np.int32(max_iter), covariance_type,
        init, n_init, history_length(max_iter), False, None, None,
    )
    params, info = jax.device_get((params, info))
    return [
        _unpadded(*jax.tree.map(lambda a, i=i: a[i], (params, info)), k, covariance_type,
                  max_iter)
        for i, k in enumerate(sizes)
    ]


def _fit_map_core(
    key, x, row_mask, prior, init_params, tol, max_iter, covariance_type, init, n_init,
    length, keep_history, chunk_size, mesh=None,
):
    """The fit of :func:`fit_map` on rows ``x`` of which ``row_mask`` marks the points,
    with component slots of zero concentration as padding (:mod:`bayes_gmm.padding`), and
    history buffers of ``length`` (:func:`history_length`) steps."""
    dtype = x.dtype
    prior = GMMPrior(*(jnp.asarray(a, dtype) for a in prior))
    row_mask = row_mask.astype(dtype)
    n_rows, n_features = x.shape
    n_slots = prior.weight_concentration.shape[0]
    n_samples = jnp.sum(row_mask)

    # Work in the frame centred on the data mean. The model is translation invariant,
    # and the whitening product x @ L^{-T} - mu @ L^{-T} would otherwise lose every digit
    # that an offset of the data far from the origin takes (float32 especially).
    shift = jnp.sum(x * row_mask[:, None], axis=0) / n_samples
    centred = (x - shift) * row_mask[:, None]
    prior = prior._replace(mean=prior.mean - shift)
    given = None
    if init_params is not None:
        given = GMMParams(*(None if a is None else jnp.asarray(a, dtype) for a in init_params))
        if given.means is not None:
            given = given._replace(means=given.means - shift)
        if all(field is not None for field in given):
            n_init = 1

    if mesh is None:
        chunk = _chunk_rows(n_rows, n_slots, n_features, chunk_size)
        x_chunks = _feature_major(centred, chunk, row_mask)
    else:
        chunk = _chunk_rows(rows_per_device(n_rows, mesh), n_slots, n_features, chunk_size)
        x_chunks = device_chunks(jnp.concatenate([centred, row_mask[:, None]], axis=1), mesh,
                                 chunk)

    def run(key):
        params = _initial_params(
            key, centred, row_mask, x_chunks, prior, covariance_type, init, given, mesh
        )
        return _em_loop(
            params, x_chunks, n_samples, prior, covariance_type, max_iter, length,
            jnp.asarray(tol, dtype), keep_history, mesh,
        )

    states = jax.vmap(run)(jax.random.split(key, n_init))
    return _best_result(states, shift, keep_history)


def _fit_map_batch_core(keys, *args):
    # A list of keys is stacked here, inside the program: eagerly, stacking would compile
    # a small program of its own for every length.
    keys = jnp.stack(keys) if isinstance(keys, list | tuple) else keys
    return jax.vmap(_fit_map_core, in_axes=(0, None, None, 0) + (None,) * 10)(keys, *args)


# Jitted, and kept lowered on disk for the next process (bayes_gmm.program_store).
_STATIC = (7, 8, 9, 10, 11, 12, 13)
_fit_map = program_store.stored_jit(_fit_map_core, _STATIC)
_fit_map_batch = program_store.stored_jit(_fit_map_batch_core, _STATIC)


def _best_result(states: _LoopState, shift, keep_history) -> tuple[GMMParams, EMInfo]:
    """The restart with the highest log posterior, moved back from the centred frame."""
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
