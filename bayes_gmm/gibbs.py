"""The conjugate blocked Gibbs sampler: the second sampler of the posterior that EM climbs.

The model of :mod:`bayes_gmm.priors` is conditionally conjugate: given the component
labels z, the weights, means and covariances have a closed-form posterior of the same
family as their prior. The sampler alternates two blocks (Diebolt and Robert, 1994):

1. ``z | theta``: one categorical draw per point from the responsibilities of
   :func:`bayes_gmm.e_step`;
2. ``theta | z``: the hard-assignment statistics (:func:`bayes_gmm.em.statistics` of the
   one-hot labels), then ``pi | z ~ Dirichlet(alpha + n)`` and, independently of pi, each
   covariance from its posterior with the mean integrated out, then each mean given its
   covariance (:func:`conditional_posterior` derives the formulas, :func:`draw_parameters`
   draws from them).

Both blocks are exact draws from full conditionals, so there is nothing to tune and no
acceptance step. Its use beside NUTS (:mod:`bayes_gmm.model`) is as an independent second
sampler of the same density: two samplers agreeing is the strongest check of either.

Everything is pure JAX over NamedTuples, like the EM core: chains run side by side under
``vmap``, transitions (warmup, then thinned draws) follow each other in one ``lax.scan``
that writes every kept draw into its slot, and one jitted inner function holds all of it.
The chain state carries the responsibilities of the current theta, so that the E-step
that step 1 needs anyway also gives the log likelihood *of the recorded draw*: every
quantity in :class:`GibbsInfo` belongs to the theta recorded beside it (and the counts to
the labels that theta was drawn from). Labels are not stored; the sampler records the
label-invariant quantities that need no alignment (log likelihood, log posterior,
counts and occupied components).
"""

from __future__ import annotations

from functools import partial
from numbers import Integral
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular

from bayes_gmm.covariance import KINDS
from bayes_gmm.em import (
    GMMParams,
    SufficientStats,
    _chunk_rows,
    _component_log_prob,
    _log_normaliser,
    _statistics_from_responsibilities,
    e_step,
    log_prior,
    statistics,
)
from bayes_gmm.priors import COVARIANCE_TYPES, GMMPrior
from bayes_gmm.sharding import device_chunks, resolve_mesh, rows_per_device, sum_over_devices


class GibbsInfo(NamedTuple):
    """Per-draw diagnostics; leading axes (num_chains, num_samples) from :func:`sample`,
    none from :func:`gibbs_step`. Each entry belongs to the draw recorded beside it."""

    log_likelihood: jax.Array  # (C, S) log p(x | theta) at the draw
    log_posterior: jax.Array  # (C, S) log p(x | theta) + log p(theta) at the draw
    occupied: jax.Array  # (C, S) int32, components with n_k > 0 in the labels theta came from
    counts: jax.Array  # (C, S, K) int32, n_k of the labels the draw was drawn from


class ConditionalPosterior(NamedTuple):
    """The conjugate posterior of theta given the labels: the prior's family, updated.

    Field names follow :class:`bayes_gmm.GMMPrior`; every field now has one value per
    component (tied: one covariance posterior shared by all components).
    """

    weight_concentration: jax.Array  # (K,) alpha + n
    mean: jax.Array  # (K, D) m_k
    mean_precision: jax.Array  # (K,) kappa_k = kappa0 + n_k
    degrees_of_freedom: jax.Array  # (K,) nu0 + n_k (spherical: nu0 + n_k D) | tied () nu0 + N
    covariance: jax.Array  # full (K, D, D) | tied (D, D) | diag (K, D) | spherical (K,)  Psi_k


class _ChainState(NamedTuple):
    params: GMMParams  # the current theta
    log_resp: jax.Array  # (N, K) log responsibilities under `params` (sharded: see _e_step)
    log_likelihood: jax.Array  # () log p(x | params)
    counts: jax.Array  # (K,) n_k of the labels `params` was drawn from


# --------------------------------------------------------------------------------------
# theta | z


def conditional_posterior(
    stats: SufficientStats, prior: GMMPrior, covariance_type: str = "full"
) -> ConditionalPosterior:
    r"""The posterior of (pi, mu, Sigma) given hard labels, from their statistics.

    Parameters
    ----------
    stats : SufficientStats
        From :func:`bayes_gmm.em.statistics` of one-hot labels: counts ``n_k`` of shape
        (K,), means ``xbar_k`` (K, D), centred scatter ``S_k`` (K, D, D) for full and
        tied or its diagonal (K, D) for diag and spherical.
    prior : GMMPrior
        Cast to the dtype of ``stats``.
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    ConditionalPosterior

    Notes
    -----
    Given z, the weights enter only through :math:`\prod_k \pi_k^{n_k}`, so
    :math:`\pi \mid z \sim \mathrm{Dir}(\alpha + n)`, independent of the rest. For the
    component parameters write :math:`\kappa_k = \kappa_0 + n_k`,
    :math:`m_k = (\kappa_0 m_0 + n_k \bar x_k) / \kappa_k`, :math:`d_k = \bar x_k - m_0`.
    Completing the square in :math:`\mu`,

    .. math::
        \kappa_0 (\mu - m_0)(\mu - m_0)^T + \sum_{z_n = k} (x_n - \mu)(x_n - \mu)^T
        = \kappa_k (\mu - m_k)(\mu - m_k)^T + S_k + \frac{\kappa_0 n_k}{\kappa_k} d_k d_k^T .

    *full*: the conditional density of :math:`(\mu_k, \Sigma_k)` is therefore
    proportional to

    .. math::
        |\Sigma_k|^{-(\nu_0 + D + 1)/2} \, |\Sigma_k|^{-1/2} \, |\Sigma_k|^{-n_k/2}
        \exp\!\left(-\tfrac12 \mathrm{tr}\!\left[(\Psi_k
        + \kappa_k (\mu_k - m_k)(\mu_k - m_k)^T)\Sigma_k^{-1}\right]\right),
        \quad \Psi_k = \Psi_0 + S_k + \frac{\kappa_0 n_k}{\kappa_k} d_k d_k^T,

    (inverse-Wishart prior, normal prior of the mean, data). The middle factor and the
    :math:`\mu_k` exponential are :math:`N(\mu_k \mid m_k, \Sigma_k / \kappa_k)` up to a
    constant; what remains is :math:`\mathrm{IW}(\Sigma_k \mid \nu_0 + n_k, \Psi_k)`. So
    :math:`\Sigma_k \mid z` (mean integrated out) is that inverse Wishart and
    :math:`\mu_k \mid \Sigma_k, z \sim N(m_k, \Sigma_k / \kappa_k)`.

    *tied*: the same algebra for every k at once. Each mean's normal again takes one
    :math:`|\Sigma|^{-1/2}` (from its own prior) into its normaliser, so
    :math:`\Sigma \mid z \sim \mathrm{IW}(\nu_0 + N, \Psi_0 + \sum_k [S_k
    + \tfrac{\kappa_0 n_k}{\kappa_k} d_k d_k^T])`, N the total count, and the
    :math:`\mu_k \mid \Sigma, z \sim N(m_k, \Sigma / \kappa_k)` are independent.

    *diag*: the full case with D = 1, feature by feature:
    :math:`\sigma^2_{kd} \mid z \sim \mathrm{InvGamma}((\nu_0 + n_k)/2,
    (\psi_{0d} + S_{kd} + \tfrac{\kappa_0 n_k}{\kappa_k} d_{kd}^2)/2)` and
    :math:`\mu_{kd} \mid \sigma^2_{kd}, z \sim N(m_{kd}, \sigma^2_{kd} / \kappa_k)`.

    *spherical*: the exponent of :math:`\sigma^2_k` collects :math:`\nu_0/2 + 1` (prior),
    :math:`D/2` (the mean's normal) and :math:`n_k D / 2` (the data); integrating
    :math:`\mu_k` out gives back :math:`(\sigma^2_k/\kappa_k)^{D/2}`, so
    :math:`\sigma^2_k \mid z \sim \mathrm{InvGamma}((\nu_0 + n_k D)/2, (\psi_0 +
    \mathrm{tr}\,S_k + \tfrac{\kappa_0 n_k}{\kappa_k}\lVert d_k\rVert^2)/2)` and
    :math:`\mu_k \mid \sigma^2_k, z \sim N(m_k, \sigma^2_k I / \kappa_k)`. The
    ``degrees_of_freedom`` field holds :math:`\nu_0 + n_k D` and ``covariance`` the
    scale :math:`\psi_0 + \dots`, so that the shape and scale are half of them, as in the
    prior.

    An empty component (n_k = 0) has :math:`S_k = 0`, a zero shrinkage term,
    :math:`m_k = m_0` and :math:`\kappa_k = \kappa_0`: its conditional is the prior.

    References
    ----------
    Murphy, K. P. (2007). Conjugate Bayesian analysis of the Gaussian distribution.
    Technical note, University of British Columbia, sections 8-9.
    Gelman, A. et al. (2013). Bayesian Data Analysis, 3rd ed., section 3.6.
    """
    dtype = stats.means.dtype
    alpha, m0, kappa0, nu0, psi0 = (jnp.asarray(a, dtype) for a in prior)
    counts = stats.counts
    kappa = kappa0 + counts
    mean = (kappa0 * m0 + counts[:, None] * stats.means) / kappa[:, None]
    # Empty components have xbar = 0 in the statistics, but a zero shrinkage weight.
    deviation = stats.means - m0
    shrinkage = kappa0 * counts / kappa
    if covariance_type in ("full", "tied"):
        outer = shrinkage[:, None, None] * deviation[:, :, None] * deviation[:, None, :]
        per_component = stats.scatter + outer
        if covariance_type == "full":
            dof = nu0 + counts
            scale = psi0 + per_component
        else:
            dof = nu0 + jnp.sum(counts)
            scale = psi0 + jnp.sum(per_component, axis=0)
        scale = 0.5 * (scale + jnp.swapaxes(scale, -1, -2))
    elif covariance_type == "diag":
        dof = nu0 + counts
        scale = psi0 + stats.scatter + shrinkage[:, None] * deviation**2
    else:
        n_features = stats.means.shape[-1]
        dof = nu0 + n_features * counts
        scale = (
            psi0 + jnp.sum(stats.scatter, -1) + shrinkage * jnp.sum(deviation**2, -1)
        )
    return ConditionalPosterior(alpha + counts, mean, kappa, dof, scale)


def _bartlett_root(log_gamma, normal, scale):
    r"""A draw :math:`\Sigma \sim \mathrm{IW}(\nu, \Psi)` as a factor B with
    :math:`\Sigma = B^T B`, from its random variates.

    Bartlett decomposition (Smith and Hocking, 1972): with :math:`\Psi = L L^T` and A lower
    triangular, :math:`A_{ii}^2 \sim \chi^2_{\nu - i + 1}` (i = 1..D) and
    :math:`A_{ij} \sim N(0, 1)` below the diagonal, :math:`A A^T \sim W(\nu, I)`, hence
    :math:`L^{-T} A A^T L^{-1} \sim W(\nu, \Psi^{-1})` and its inverse
    :math:`\Sigma = L A^{-T} A^{-1} L^T = B^T B` with :math:`B = A^{-1} L^T` follows
    :math:`\mathrm{IW}(\nu, \Psi)`. B is one triangular solve (no matrix is inverted), and
    :math:`B^T` is a square root of :math:`\Sigma` that draws the mean without another
    Cholesky factorisation.

    Parameters
    ----------
    log_gamma : Array of shape (D,)
        ``log Gamma((nu - i) / 2)`` draws, i = 0..D-1 (``chi^2_f = 2 Gamma(f / 2)``).
    normal : Array of shape (D, D)
        Standard normal draws; the part below the diagonal is used.
    scale : Array of shape (D, D)
        Symmetric positive definite :math:`\Psi`.

    Returns
    -------
    Array of shape (D, D)
        B.

    References
    ----------
    Smith, W. B. and Hocking, R. R. (1972). Algorithm AS 53: Wishart variate generator.
    Journal of the Royal Statistical Society C 21, 341-345.
    """
    # sqrt(2 G) from log G: a small G (few degrees of freedom) cannot round to zero first.
    diagonal = jnp.exp(0.5 * (jnp.log(jnp.asarray(2.0, scale.dtype)) + log_gamma))
    bartlett = jnp.tril(normal, -1) + jnp.diag(diagonal)
    return solve_triangular(bartlett, jnp.linalg.cholesky(scale).T, lower=True)


def draw_parameters(key, posterior: ConditionalPosterior, covariance_type: str = "full"):
    r"""One draw of (pi, mu, Sigma) from :func:`conditional_posterior`'s result.

    The weights from :math:`\mathrm{Dir}(\alpha + n)` (normalised gamma variates); each
    covariance from its inverse Wishart (Bartlett decomposition, :func:`_bartlett_root`)
    or inverse gamma (``scale / Gamma(shape)``); then each mean given its covariance,
    :math:`\mu_k = m_k + R_k \varepsilon_k / \sqrt{\kappa_k}` with
    :math:`R_k R_k^T = \Sigma_k` and :math:`\varepsilon_k \sim N(0, I)`.

    Parameters
    ----------
    key : jax.Array
    posterior : ConditionalPosterior
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    GMMParams
        In the dtype of ``posterior.mean``.
    """
    gamma_key, normal_key = jax.random.split(key)
    alpha, mean, kappa, dof, scale = posterior
    n_components, n_features = mean.shape
    dtype = mean.dtype
    steps = jnp.arange(n_features, dtype=dtype)
    shape = {
        "full": lambda: 0.5 * (dof[:, None] - steps),  # (K, D) Bartlett chi^2 / 2
        "tied": lambda: 0.5 * (dof - steps),  # (D,)
        "diag": lambda: jnp.broadcast_to(0.5 * dof[:, None], scale.shape),  # (K, D)
        "spherical": lambda: 0.5 * dof,  # (K,)
    }[covariance_type]()
    # Every gamma variate of the draw in one call: each call of JAX's gamma sampler
    # compiles its own rejection loop, and those loops dominate the compile time. Log
    # space, as jax.random.dirichlet does, so that small shapes cannot underflow to zero.
    log_gamma = jax.random.loggamma(
        gamma_key, jnp.concatenate([alpha, shape.reshape(-1)]), dtype=dtype
    )
    weights = jax.nn.softmax(log_gamma[:n_components])
    log_gamma = log_gamma[n_components:].reshape(shape.shape)
    matrix = covariance_type in ("full", "tied")
    size = n_components * n_features
    noise = jax.random.normal(normal_key, (size + (scale.size if matrix else 0),), dtype)
    spread = noise[:size].reshape(n_components, n_features) / jnp.sqrt(kappa)[:, None]
    if matrix:
        below = noise[size:].reshape(scale.shape)
        if covariance_type == "full":
            root = jax.vmap(_bartlett_root)(log_gamma, below, scale)
            means = mean + jnp.einsum("kji,kj->ki", root, spread)
        else:
            root = _bartlett_root(log_gamma, below, scale)
            means = mean + spread @ root
        covariances = jnp.swapaxes(root, -1, -2) @ root
        # B^T B is symmetric in exact arithmetic only; the E-step factorises it.
        covariances = 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))
    else:
        # InvGamma(nu / 2, psi / 2) as (psi / 2) / Gamma(nu / 2).
        covariances = jnp.exp(jnp.log(0.5 * scale) - log_gamma)
        sd = jnp.sqrt(covariances)
        means = mean + (sd if covariance_type == "diag" else sd[:, None]) * spread
    return GMMParams(weights, means, covariances)


# --------------------------------------------------------------------------------------
# One transition


def _e_step(x, params, covariance_type, mesh=None):
    """Log responsibilities and the log likelihood. With a ``mesh``, ``x`` is the
    device-major layout of :func:`bayes_gmm.sharding.device_chunks` (with its row mask)
    and the responsibilities come in the same layout, (n_devices, n_chunks, K, C)."""
    if mesh is None:
        log_resp, log_density = e_step(x, params, covariance_type)
        return log_resp, jnp.sum(log_density)
    kind = KINDS[covariance_type]
    n_components, n_features = params.means.shape
    factor = kind.factor(params.covariances, n_components, n_features)
    whitening = kind.whitening(params.means, factor)
    log_norm = _log_normaliser(jnp.log(params.weights), factor.half_log_det, n_features)

    def one_chunk(points):
        log_prob = _component_log_prob(kind.whiten(points, whitening), log_norm)
        log_density = jax.nn.logsumexp(log_prob, axis=0)
        return log_prob - log_density, jnp.sum(points[n_features] * log_density)

    def one_device(chunks):
        log_resp, log_density = lax.map(one_chunk, chunks)
        return jnp.sum(log_density), log_resp

    log_likelihood, log_resp = sum_over_devices(one_device, mesh, x)
    return log_resp, log_likelihood


def _label_statistics(key, log_resp, x, covariance_type, mesh=None):
    """z | theta, and the statistics of the labels drawn."""
    if mesh is None:
        n_components = log_resp.shape[-1]
        labels = jax.random.categorical(key, log_resp, axis=-1)
        one_hot = jax.nn.one_hot(labels, n_components, dtype=x.dtype)
        return statistics(x, one_hot, covariance_type)
    # The Gumbel-max draw that jax.random.categorical makes, with the noise of the padded
    # (rows, K) array laid out like the points: JAX's partitionable PRNG gives its first N
    # rows the values of the one-device draw, so the labels (and the chains) agree.
    n_devices, n_chunks, n_components, chunk = log_resp.shape
    noise = jax.random.gumbel(key, (n_devices * n_chunks * chunk, n_components), x.dtype)
    labels = jnp.argmax(log_resp + device_chunks(noise, mesh, chunk), axis=2)
    mask = x[:, :, -1:, :]
    one_hot = jnp.swapaxes(jax.nn.one_hot(labels, n_components, dtype=x.dtype), 2, 3) * mask
    return _statistics_from_responsibilities(x, one_hot, covariance_type, mesh)


def _start_state(x, params, covariance_type, mesh=None):
    n_components = params.weights.shape[0]
    log_resp, log_likelihood = _e_step(x, params, covariance_type, mesh)
    return _ChainState(params, log_resp, log_likelihood, jnp.zeros(n_components, x.dtype))


def _transition(key, state: _ChainState, x, prior, covariance_type, mesh=None) -> _ChainState:
    """z | theta, then theta | z; then the E-step of the new theta, which both records its
    log likelihood and gives the responsibilities the next transition draws labels from."""
    label_key, theta_key = jax.random.split(key)
    stats = _label_statistics(label_key, state.log_resp, x, covariance_type, mesh)
    params = draw_parameters(
        theta_key, conditional_posterior(stats, prior, covariance_type), covariance_type
    )
    log_resp, log_likelihood = _e_step(x, params, covariance_type, mesh)
    return _ChainState(params, log_resp, log_likelihood, stats.counts)


def _record(state: _ChainState, prior, covariance_type) -> tuple[GMMParams, GibbsInfo]:
    counts = state.counts.astype(jnp.int32)
    info = GibbsInfo(
        log_likelihood=state.log_likelihood,
        log_posterior=state.log_likelihood + log_prior(state.params, prior, covariance_type),
        occupied=jnp.sum(counts > 0).astype(jnp.int32),
        counts=counts,
    )
    return state.params, info


def _centre(x, prior, params):
    """Move to the frame centred on the data mean (the model is translation invariant):
    the E-step's whitening ``x L^{-T} - mu L^{-T}`` would otherwise lose the digits that
    an offset of the data from the origin takes, in float32 especially."""
    shift = jnp.mean(x, axis=0)
    return x - shift, prior._replace(mean=prior.mean - shift), params._replace(
        means=params.means - shift
    ), shift


def _as_dtype(tree, dtype):
    return type(tree)(*(jnp.asarray(a, dtype) for a in tree))


@partial(jax.jit, static_argnames=("covariance_type",))
def gibbs_step(key, x, params: GMMParams, prior: GMMPrior, covariance_type: str = "full"):
    """One Gibbs transition from ``params``: labels, then weights, covariances and means.

    Parameters
    ----------
    key : jax.Array
    x : Array of shape (n_samples, n_features)
    params : GMMParams
        The current theta.
    prior : GMMPrior
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    params : GMMParams
        The new theta, in the dtype of ``x``.
    step_info : GibbsInfo
        Of the new theta (no leading axes): its log likelihood and log posterior, and the
        counts of the labels it was drawn from. Costs a second E-step, which
        :func:`sample` shares with the next transition.
    """
    dtype = x.dtype
    x, prior, params, shift = _centre(x, _as_dtype(prior, dtype), _as_dtype(params, dtype))
    state = _transition(key, _start_state(x, params, covariance_type), x, prior, covariance_type)
    params, info = _record(state, prior, covariance_type)
    return params._replace(means=params.means + shift), info


# --------------------------------------------------------------------------------------
# Chains


def jitter_start(key, params: GMMParams, jitter, covariance_type: str = "full") -> GMMParams:
    r"""A start near ``params``, perturbed in unconstrained coordinates.

    - weights: logits ``log pi_k + jitter * eps_k``, renormalised (a zero weight stays
      zero; the first Dirichlet draw gives it mass again);
    - means: ``mu_kd + jitter * sd_kd * eps_kd``, ``sd_kd`` the component's standard
      deviation along feature d;
    - covariances: multiplied by ``exp(jitter * eps)``, one factor per matrix (full, tied)
      or per variance (diag, spherical), which keeps them positive definite.

    ``eps`` are independent standard normals; ``jitter = 0`` returns ``params`` (weights
    renormalised).

    Parameters
    ----------
    key : jax.Array
    params : GMMParams
    jitter : float or Array of shape ()
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    GMMParams
    """
    weight_key, mean_key, covariance_key = jax.random.split(key, 3)
    weights, means, covariances = params
    dtype = means.dtype
    if covariance_type in ("full", "tied"):
        sd = jnp.sqrt(jnp.diagonal(covariances, axis1=-2, axis2=-1))
        factor_shape = covariances.shape[:-2]
    elif covariance_type == "diag":
        sd = jnp.sqrt(covariances)
        factor_shape = covariances.shape
    else:
        sd = jnp.sqrt(covariances)[:, None]
        factor_shape = covariances.shape
    logits = jnp.log(weights) + jitter * jax.random.normal(weight_key, weights.shape, dtype)
    means = means + jitter * sd * jax.random.normal(mean_key, means.shape, dtype)
    factor = jnp.exp(jitter * jax.random.normal(covariance_key, factor_shape, dtype))
    if covariance_type in ("full", "tied"):
        factor = factor[..., None, None]
    return GMMParams(jax.nn.softmax(logits), means, covariances * factor)


def _check_static(x, prior, init_params, covariance_type, counts):
    """Checks of types and shapes only: free at trace time, nothing data-dependent."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {', '.join(map(repr, COVARIANCE_TYPES))}; "
            f"got {covariance_type!r}."
        )
    for name, value, smallest in counts:
        if isinstance(value, bool) or not isinstance(value, Integral) or value < smallest:
            raise ValueError(f"{name} must be an integer >= {smallest}; got {value!r}.")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n_samples, n_features); got shape {x.shape}.")
    n_features = x.shape[1]
    n_components = jnp.shape(prior.weight_concentration)[0]
    expected = {"full": (n_components, n_features, n_features),
                "tied": (n_features, n_features),
                "diag": (n_components, n_features),
                "spherical": (n_components,)}[covariance_type]
    got = tuple(jnp.shape(a) for a in init_params)
    if got != ((n_components,), (n_components, n_features), expected):
        raise ValueError(
            f"init_params do not match the data, the prior and covariance_type="
            f"{covariance_type!r}: expected weights, means and covariances of shapes "
            f"({n_components},), ({n_components}, {n_features}) and {expected}; got "
            f"{', '.join(map(str, got))}. Start from bayes_gmm.fit_map(...) with the same "
            "prior and covariance_type."
        )


def sample(
    key,
    x,
    prior: GMMPrior,
    init_params: GMMParams,
    *,
    covariance_type: str = "full",
    num_samples: int = 1000,
    num_warmup: int = 500,
    num_chains: int = 4,
    thinning: int = 1,
    init_jitter=0.0,
    mesh="auto",
) -> tuple[GMMParams, GibbsInfo]:
    """Posterior draws by conjugate blocked Gibbs sampling, several chains side by side.

    Each chain starts at ``init_params`` (normally the MAP of :func:`bayes_gmm.fit_map`),
    perturbed by :func:`jitter_start` when ``init_jitter > 0``, makes ``num_warmup``
    transitions that are discarded, then ``num_samples * thinning`` transitions of which
    every ``thinning``-th is kept. Pure and jitted: usable under ``jax.jit`` and
    ``jax.vmap``; a second call with the same shapes and settings (``init_jitter``
    excepted) does not re-trace.

    Parameters
    ----------
    key : jax.Array
        PRNG key; chain c uses ``jax.random.split(key, num_chains)[c]``.
    x : Array of shape (n_samples, n_features)
        Finite data; its floating dtype is the dtype of every result.
    prior : GMMPrior
        From :func:`bayes_gmm.default_prior`; K is ``prior.weight_concentration.shape[0]``.
    init_params : GMMParams
        The start, all three fields given, shapes of ``covariance_type``.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
    num_samples : int, default 1000
        Draws kept per chain.
    num_warmup : int, default 500
        Transitions discarded per chain before the first kept one.
    num_chains : int, default 4
    thinning : int, default 1
        Transitions per kept draw.
    init_jitter : float, default 0.0
        Scale of the per-chain perturbation of the start (:func:`jitter_start`); with 0
        every chain starts at ``init_params`` and the chains differ only by their keys.
    mesh : "auto", jax.sharding.Mesh or None, default "auto"
        Devices to split the points over (:mod:`bayes_gmm.sharding`): each draws the
        labels of its points and sums their statistics, and one all-reduce per transition
        adds them; theta is drawn on every device alike. "auto" uses every device when
        there are several, None one device. The draws equal the one-device draws to
        rounding (the labels are drawn from the same random numbers).

    Returns
    -------
    draws : GMMParams
        Leading axes (num_chains, num_samples): weights (C, S, K), means (C, S, K, D),
        covariances (C, S) + the shape of the covariance type.
    info : GibbsInfo
        Of every kept draw.

    References
    ----------
    Diebolt, J. and Robert, C. P. (1994). Estimation of finite mixture distributions
    through Bayesian sampling. Journal of the Royal Statistical Society B 56, 363-375.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    settings = (("num_samples", num_samples, 1), ("num_warmup", num_warmup, 0),
                ("num_chains", num_chains, 1), ("thinning", thinning, 1))
    _check_static(x, prior, init_params, covariance_type, settings)
    # Every argument explicit and every array in x's dtype: jit keys its cache on which
    # keywords were passed and on the dtypes (and weak types) of the arguments.
    return _sample(
        key, x, _as_dtype(prior, x.dtype), _as_dtype(init_params, x.dtype),
        jnp.asarray(init_jitter, x.dtype), covariance_type,
        *(int(value) for _, value, _ in settings), resolve_mesh(mesh),
    )


@partial(jax.jit, static_argnums=(5, 6, 7, 8, 9, 10))
def _sample(
    key, x, prior, init_params, init_jitter, covariance_type, num_samples, num_warmup,
    num_chains, thinning, mesh=None,
):
    x, prior, init_params, shift = _centre(x, prior, init_params)
    if mesh is not None:
        n_samples, n_features = x.shape
        n_components = init_params.weights.shape[0]
        chunk = _chunk_rows(rows_per_device(n_samples, mesh), n_components, n_features, None)
        mask = jnp.ones((n_samples, 1), x.dtype)
        x = device_chunks(jnp.concatenate([x, mask], axis=1), mesh, chunk)

    total = num_warmup + num_samples * thinning

    def transition(carry, step):
        state, kept = carry
        key, t = step
        state = _transition(key, state, x, prior, covariance_type, mesh)
        # One loop over every transition, writing each kept draw into its slot, so that
        # the transition is compiled once rather than once per loop (warmup, thinning).
        offset = t - num_warmup + 1
        keep = (offset > 0) & (offset % thinning == 0)
        slot = jnp.clip(offset // thinning - 1, 0, num_samples - 1)
        record = _record(state, prior, covariance_type)
        kept = jax.tree.map(
            lambda buffer, new: buffer.at[slot].set(jnp.where(keep, new, buffer[slot])),
            kept, record,
        )
        return (state, kept), None

    def chain(key):
        start_key, loop_key = jax.random.split(key)
        start = jitter_start(start_key, init_params, init_jitter, covariance_type)
        state = _start_state(x, start, covariance_type, mesh)
        record = jax.eval_shape(lambda: _record(state, prior, covariance_type))
        kept = jax.tree.map(lambda a: jnp.zeros((num_samples, *a.shape), a.dtype), record)
        steps = (jax.random.split(loop_key, total), jnp.arange(total))
        (_, kept), _ = lax.scan(transition, (state, kept), steps)
        return kept

    draws, info = jax.vmap(chain)(jax.random.split(key, num_chains))
    return draws._replace(means=draws.means + shift), info
