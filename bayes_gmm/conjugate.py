"""theta | z: the conjugate posterior of the mixture's parameters given the labels, and
exact draws from it.

The model of :mod:`bayes_gmm.priors` is conditionally conjugate: given the component
labels z, the weights, means and covariances have a closed-form posterior of the same
family as their prior (:func:`conditional_posterior` derives it from the statistics of
the labels, :func:`draw_parameters` draws from it). This is the second block of the Gibbs
sampler of :mod:`bayes_gmm.gibbs`; with no labels (n_k = 0) the conditional is the prior,
which :mod:`bayes_gmm.validation` draws from.

Each component slot draws its variates from its own ``fold_in`` key and a slot of
concentration zero (padding, :mod:`bayes_gmm.padding`) gets weight zero, so the draws of
the real slots do not depend on how many slots are padded.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from bayes_gmm import padding
from bayes_gmm.em import GMMParams, SufficientStats
from bayes_gmm.priors import GMMPrior


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


def _variates(key, gamma_shapes, size):
    """``log Gamma(shape)`` variates (log space, as jax.random.dirichlet draws them, so
    that small shapes cannot underflow to zero) and ``size`` standard normals."""
    gamma_key, normal_key = jax.random.split(key)
    dtype = gamma_shapes.dtype
    return (jax.random.loggamma(gamma_key, gamma_shapes, dtype=dtype),
            jax.random.normal(normal_key, (size,), dtype))


def draw_parameters(key, posterior: ConditionalPosterior, covariance_type: str = "full"):
    r"""One draw of (pi, mu, Sigma) from :func:`conditional_posterior`'s result.

    The weights from :math:`\mathrm{Dir}(\alpha + n)` (normalised gamma variates); each
    covariance from its inverse Wishart (Bartlett decomposition, :func:`_bartlett_root`)
    or inverse gamma (``scale / Gamma(shape)``); then each mean given its covariance,
    :math:`\mu_k = m_k + R_k \varepsilon_k / \sqrt{\kappa_k}` with
    :math:`R_k R_k^T = \Sigma_k` and :math:`\varepsilon_k \sim N(0, I)`. Slot k draws
    from ``fold_in(key, k)``; a slot of concentration zero (padding) gets weight zero.

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
    slot_key, shared_key = jax.random.split(key)
    alpha, mean, kappa, dof, scale = posterior
    n_components, n_features = mean.shape
    dtype = mean.dtype
    steps = jnp.arange(n_features, dtype=dtype)
    own_shapes = {  # the gamma shapes of each slot's covariance
        "full": lambda: 0.5 * (dof[:, None] - steps),  # (K, D) Bartlett chi^2 / 2
        "tied": lambda: jnp.zeros((n_components, 0), dtype),  # shared: drawn below
        "diag": lambda: jnp.broadcast_to(0.5 * dof[:, None], scale.shape),  # (K, D)
        "spherical": lambda: 0.5 * dof[:, None],  # (K, 1)
    }[covariance_type]()
    # Concentration zero marks a padded slot (bayes_gmm.padding): weight zero for ever.
    # Its gamma shape 1 only keeps the sampler away from a degenerate Gamma(0).
    live = alpha > 0
    shapes = jnp.concatenate([jnp.where(live, alpha, 1.0)[:, None], own_shapes], axis=1)
    n_normal = n_features * (n_features + 1 if covariance_type == "full" else 1)
    # Every slot's gamma variates in one vmapped call (tied: one more call, its shared
    # matrix): each call of JAX's gamma sampler compiles its own rejection loop.
    log_gamma, noise = jax.vmap(partial(_variates, size=n_normal))(
        padding.fold_in_keys(slot_key, n_components), shapes
    )
    weights = jax.nn.softmax(jnp.where(live, log_gamma[:, 0], -jnp.inf))
    log_gamma = log_gamma[:, 1:]
    spread = noise[:, :n_features] / jnp.sqrt(kappa)[:, None]
    if covariance_type in ("full", "tied"):
        if covariance_type == "full":
            below = noise[:, n_features:].reshape(scale.shape)
            root = jax.vmap(_bartlett_root)(log_gamma, below, scale)
            means = mean + jnp.einsum("kji,kj->ki", root, spread)
        else:
            log_gamma, below = _variates(shared_key, 0.5 * (dof - steps), scale.size)
            root = _bartlett_root(log_gamma, below.reshape(scale.shape), scale)
            means = mean + spread @ root
        covariances = jnp.swapaxes(root, -1, -2) @ root
        # B^T B is symmetric in exact arithmetic only; the E-step factorises it.
        covariances = 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))
    else:
        # InvGamma(nu / 2, psi / 2) as (psi / 2) / Gamma(nu / 2).
        covariances = jnp.exp(jnp.log(0.5 * scale) - log_gamma.reshape(scale.shape))
        sd = jnp.sqrt(covariances)
        means = mean + (sd if covariance_type == "diag" else sd[:, None]) * spread
    return GMMParams(weights, means, covariances)


__all__ = ["ConditionalPosterior", "conditional_posterior", "draw_parameters"]
