"""What differs between the four covariance types, behind one set of function names.

The EM core (:mod:`bayes_gmm.em`) is written once. Everything that depends on the
covariance type lives here, as one class of static functions per type:

- ``factor(covariances, K, D)`` -> :class:`Factor`, the Cholesky factor L of every component
  covariance with its inverse and half log-determinant (computed once per EM step);
- ``whitening(means, factor)`` -> the map ``x -> L_k^{-1} (x - mu_k)`` of every component, in
  the form that ``whiten`` applies (with ``factor=None``: ``x -> x - mu_k``, data units);
- ``whiten(x, whitening)`` -> ``y`` of shape (K, D, C), ``y_kn = L_k^{-1} (x_n - mu_k)``, so
  that the Mahalanobis distance is ``sum_d y_kdn^2``;
- ``moments(r, y, x)`` -> responsibility-weighted sums over one chunk of points, and
  ``totals(sums, whitening)`` -> from their sum over all chunks, the count, first moment and
  second moment (full and tied) or its diagonal (diag and spherical) of ``y``;
- ``unwhiten_vector`` / ``unwhiten_scatter`` map whitened statistics back to data units;
- ``map_covariance(...)`` -> the exact MAP update of the covariance (docstrings derive it);
- ``log_gamma_arguments(prior, D)`` -> the arguments of the log-gamma functions in the
  normaliser of the covariance prior, and ``log_prior_components(params, prior, alive,
  factor, log_gammas)`` -> log p(mu, Sigma) of the live components, given those
  log-gammas (:func:`bayes_gmm.em.log_prior` evaluates every log-gamma of the prior in one
  call: each call compiles to some twenty kernels);
- ``n_parameters(K, D)`` -> free covariance parameters, for BIC/AIC.

Shapes of ``covariances`` follow scikit-learn: full (K, D, D), tied (D, D), diag (K, D),
spherical (K,). No covariance matrix is ever inverted: whitening uses the inverse of the
triangular Cholesky factor (a triangular solve against the identity, as scikit-learn does).

Points come in chunks of C in a *feature-major* layout: ``x`` of shape (D + 1, C) holds
the D coordinates of each point in its first D rows and a row mask (1 for a point, 0 for
padding) in the last. With K and D around ten, putting the points on the minor axis keeps
every elementwise step (squares, the softmax over components, the weighting by
responsibilities) vectorised along a long axis, and the mask row, which is 1 for every
point, turns the affine maps of full and tied covariances into plain matrix products:

- whitening every point against every component is one (K D, D + 1) x (D + 1, C) product
  with the maps ``P_k = [L_k^{-1}, -L_k^{-1} mu_k]`` applied to ``(x_n, 1)``;
- the moments are a (K D, C) x (C, D + 1) product, ``M_k = sum_n r_kn y_kn (x_n, 1)^T``
  (its last column is the first moment of ``y``), and after the pass
  ``sum_n r_kn y_kn y_kn^T = M_k P_k^T``. Plain products run 10-15% faster on a CPU than
  K batched (D, C) x (C, D) products of ``y`` with itself. Only one factor of ``M_k``
  is centred on mu_k, but the float32 error this leaves is of the order of the rounding
  of ``y`` itself (relative ``eps |L_k^{-1} mu_k|``), not its square, which fully
  uncentred sums of ``x x^T`` would pay.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

LOG_2PI = 1.8378770664093453

# The moment product of full and tied covariances sums over the points of a chunk, and
# XLA's CPU matrix product does fewer multiply-adds per second when that contraction is
# long (~10^4 points) than when it is a few thousand. So it runs over blocks of points
# whose slice of ``y`` holds about this many elements, at most MAX_MOMENT_BLOCKS of them
# (each is a kernel to compile): an EM iteration at N = 1e6, K = D = 10 takes about 13%
# less time than with one product per chunk.
MOMENT_BLOCK_ELEMENTS = 2**18
MAX_MOMENT_BLOCKS = 8


class Factor(NamedTuple):
    """Cholesky factor of the component covariances."""

    cholesky: jnp.ndarray  # full (K, D, D) | tied (D, D): lower L; diag (K, D) | sph (K,): sd
    inverse: jnp.ndarray  # same shape: L^{-1}, or 1 / sd
    half_log_det: jnp.ndarray  # (K,) 0.5 log |Sigma_k|


def _inverse_cholesky(cholesky):
    eye = jnp.broadcast_to(jnp.eye(cholesky.shape[-1], dtype=cholesky.dtype), cholesky.shape)
    return solve_triangular(cholesky, eye, lower=True)


def _log_inverse_gamma(value, shape, scale, log_gamma_shape):
    """log InvGamma(value | shape, scale), elementwise, given log Gamma(shape)."""
    return (shape * jnp.log(scale) - log_gamma_shape - (shape + 1) * jnp.log(value)
            - scale / value)


def _multigamma_arguments(dof, d):
    """The arguments a - j / 2, j = 0..d-1, of the log-gammas that make up the log
    multivariate gamma function log Gamma_d(a), a = dof / 2."""
    dtype = jnp.promote_types(jnp.asarray(dof).dtype, jnp.float32)  # dof's float type
    return 0.5 * dof - 0.5 * jnp.arange(d, dtype=dtype)


def _inverse_wishart_gamma_arguments(prior, n_features):
    """The log-gamma arguments of an inverse-Wishart prior's normaliser (full, tied)."""
    return _multigamma_arguments(prior.degrees_of_freedom, n_features)


def _inverse_gamma_gamma_arguments(prior, n_features):
    """The log-gamma argument of an inverse-gamma prior's normaliser (diag, spherical)."""
    return jnp.reshape(0.5 * prior.degrees_of_freedom, (1,))


def _log_multigamma(log_gammas, d):
    """log Gamma_d(a) from the log-gammas of :func:`_multigamma_arguments` (as
    jax.scipy.special.multigammaln computes it)."""
    return jnp.sum(log_gammas) + 0.25 * d * (d - 1) * float(np.log(np.pi))


def _log_inverse_wishart(log_det, trace_scale_precision, dof, scale, log_gammas):
    """log InvWishart(Sigma | dof, scale) from log|Sigma| and tr(scale Sigma^{-1}), given
    the log-gammas of :func:`_multigamma_arguments`."""
    d = scale.shape[-1]
    _, log_det_scale = jnp.linalg.slogdet(scale)
    return (
        0.5 * dof * log_det_scale
        - 0.5 * dof * d * jnp.log(2.0)
        - _log_multigamma(log_gammas, d)
        - 0.5 * (dof + d + 1) * log_det
        - 0.5 * trace_scale_precision
    )


def _log_mean_prior(means, prior, whitened_dev_sq, half_log_det):
    """log N(mu_k | m0, Sigma_k / kappa0) from |L_k^{-1}(mu_k - m0)|^2 and 0.5 log|Sigma_k|."""
    d = means.shape[-1]
    kappa0 = prior.mean_precision
    return (
        -0.5 * d * LOG_2PI
        + 0.5 * d * jnp.log(kappa0)
        - half_log_det
        - 0.5 * kappa0 * whitened_dev_sq
    )


def _affine_whitening(means, factor):
    """(K, D, D+1) maps ``[A_k, -A_k mu_k]`` of points with a trailing 1, A_k = L_k^{-1}
    (the identity without a factor)."""
    k, d = means.shape
    inverse = jnp.eye(d, dtype=means.dtype) if factor is None else factor.inverse
    inverse = jnp.broadcast_to(inverse, (k, d, d))
    shift = -jnp.einsum("kde,ke->kd", inverse, means)
    return jnp.concatenate([inverse, shift[:, :, None]], axis=2)


def _affine_whiten(x, maps):
    # One (K D, D+1) x (D+1, C) product whitens every point against every component.
    k, d, d1 = maps.shape
    return (maps.reshape(k * d, d1) @ x).reshape(k, d, x.shape[-1])


def _affine_moments(r, y, x):
    # The mixed moments sum_n r y (x, 1)^T: (K D, C) x (C, D+1) products, one per block of
    # points (see MOMENT_BLOCK_ELEMENTS), summed.
    k, d, c = y.shape
    ry = r[:, None, :] * y
    n_blocks = min(MAX_MOMENT_BLOCKS, -(-c * k * d // MOMENT_BLOCK_ELEMENTS))
    block = -(-c // n_blocks)
    mixed = sum(
        jnp.einsum("kic,jc->kij", ry[..., start:start + block], x[:, start:start + block])
        for start in range(0, c, block)
    )
    return jnp.sum(r, -1), mixed


def _affine_totals(sums, maps):
    # sum_n r y y^T = (sum_n r y (x, 1)^T) [A, -A mu]^T: linear, so once after the pass.
    counts, mixed = sums
    d = maps.shape[1]
    return counts, mixed[:, :, d], mixed @ jnp.swapaxes(maps, -1, -2)


class _Scaling(NamedTuple):
    scale: jnp.ndarray  # (K, D) 1 / sd of every component and feature (1 without a factor)
    means: jnp.ndarray  # (K, D)


def _diagonal_whitening(means, factor):
    """1 / sd of every component and feature (1 without a factor), with the means."""
    if factor is None:
        return _Scaling(jnp.ones_like(means), means)
    k = means.shape[0]
    return _Scaling(jnp.broadcast_to(factor.inverse.reshape(k, -1), means.shape), means)


def _diagonal_whiten(x, scaling):
    d = scaling.means.shape[-1]
    return (x[None, :d] - scaling.means[:, :, None]) * scaling.scale[:, :, None]


def _diagonal_moments(r, y, x):
    ry = r[:, None, :] * y
    return jnp.sum(r, -1), jnp.sum(ry, -1), jnp.sum(ry * y, -1)


def _diagonal_totals(sums, scaling):
    return sums


class Full:
    """One unrestricted covariance per component, ``Sigma_k ~ InvWishart(nu0, Psi0)``."""

    diagonal = False
    whitening = staticmethod(_affine_whitening)
    whiten = staticmethod(_affine_whiten)
    moments = staticmethod(_affine_moments)
    totals = staticmethod(_affine_totals)

    @staticmethod
    def factor(covariances, n_components, n_features):
        cholesky = jnp.linalg.cholesky(covariances)
        diag = jnp.diagonal(cholesky, axis1=-2, axis2=-1)
        return Factor(cholesky, _inverse_cholesky(cholesky), jnp.sum(jnp.log(diag), -1))

    @staticmethod
    def unwhiten_vector(v, factor):
        return jnp.einsum("kde,ke->kd", factor.cholesky, v)

    @staticmethod
    def unwhiten_scatter(s, factor):
        return factor.cholesky @ s @ jnp.swapaxes(factor.cholesky, -1, -2)

    @staticmethod
    def map_covariance(counts, scatter, deviation, shrinkage, alive, prior):
        r"""Joint mode of the normal-inverse-Wishart posterior of each component.

        .. math::
            \Psi_k = \Psi_0 + S_k + \frac{\kappa_0 N_k}{\kappa_0 + N_k}
                     (\bar x_k - m_0)(\bar x_k - m_0)^T, \qquad
            \hat\Sigma_k = \frac{\Psi_k}{\nu_0 + N_k + D + 2}

        The posterior density is proportional to
        :math:`|\Sigma|^{-(\nu_k + D + 2)/2} \exp(-\tfrac12 \mathrm{tr}(\Psi_k\Sigma^{-1}))`
        at :math:`\mu = m_k` (``nu_k + D + 1`` from the inverse Wishart, one more from
        the normal on the mean); setting its derivative in Sigma to zero gives the above.
        """
        d = deviation.shape[-1]
        psi = (
            prior.covariance
            + scatter
            + shrinkage[:, None, None] * deviation[:, :, None] * deviation[:, None, :]
        )
        psi = 0.5 * (psi + jnp.swapaxes(psi, -1, -2))
        return psi / (prior.degrees_of_freedom + counts + d + 2)[:, None, None]

    log_gamma_arguments = staticmethod(_inverse_wishart_gamma_arguments)

    @staticmethod
    def log_prior_components(params, prior, alive, factor, log_gammas):
        """log IW(Sigma_k) + log N(mu_k | m0, Sigma_k / kappa0), summed over live k."""
        psi_whitened = factor.inverse @ prior.covariance @ jnp.swapaxes(factor.inverse, -1, -2)
        trace = jnp.trace(psi_whitened, axis1=-2, axis2=-1)
        log_iw = _log_inverse_wishart(
            2 * factor.half_log_det, trace, prior.degrees_of_freedom, prior.covariance,
            log_gammas,
        )
        dev = jnp.einsum("kde,ke->kd", factor.inverse, params.means - prior.mean)
        log_mean = _log_mean_prior(params.means, prior, jnp.sum(dev**2, -1), factor.half_log_det)
        return jnp.sum(jnp.where(alive, log_iw + log_mean, 0.0))

    @staticmethod
    def n_parameters(n_components, n_features):
        return n_components * n_features * (n_features + 1) // 2


class Tied:
    """One covariance shared by all components, ``Sigma ~ InvWishart(nu0, Psi0)``."""

    diagonal = False
    whitening = staticmethod(_affine_whitening)
    whiten = staticmethod(_affine_whiten)
    moments = staticmethod(_affine_moments)
    totals = staticmethod(_affine_totals)

    @staticmethod
    def factor(covariance, n_components, n_features):
        cholesky = jnp.linalg.cholesky(covariance)
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(cholesky)))
        return Factor(
            cholesky, _inverse_cholesky(cholesky), jnp.full(n_components, half_log_det)
        )

    @staticmethod
    def unwhiten_vector(v, factor):
        return v @ factor.cholesky.T

    @staticmethod
    def unwhiten_scatter(s, factor):
        return factor.cholesky @ s @ factor.cholesky.T

    @staticmethod
    def map_covariance(counts, scatter, deviation, shrinkage, alive, prior):
        r"""Mode of the shared covariance.

        .. math::
            \hat\Sigma = \frac{\Psi_0 + \sum_k \left[S_k + \frac{\kappa_0 N_k}{\kappa_0 + N_k}
                (\bar x_k - m_0)(\bar x_k - m_0)^T\right]}{\nu_0 + N + K + D + 1}

        The exponent of :math:`|\Sigma|` collects ``nu0 + D + 1`` from the inverse
        Wishart, one for each of the K component means and N from the data. K counts
        live components only (a component with zero weight has left the model).
        """
        d = deviation.shape[-1]
        per_component = scatter + shrinkage[:, None, None] * (
            deviation[:, :, None] * deviation[:, None, :]
        )
        psi = prior.covariance + jnp.sum(per_component, axis=0)
        psi = 0.5 * (psi + psi.T)
        n_alive = jnp.sum(alive)
        return psi / (prior.degrees_of_freedom + jnp.sum(counts) + n_alive + d + 1)

    log_gamma_arguments = staticmethod(_inverse_wishart_gamma_arguments)

    @staticmethod
    def log_prior_components(params, prior, alive, factor, log_gammas):
        """log IW(Sigma) + sum over live k of log N(mu_k | m0, Sigma / kappa0)."""
        trace = jnp.trace(factor.inverse @ prior.covariance @ factor.inverse.T)
        log_iw = _log_inverse_wishart(
            2 * factor.half_log_det[0], trace, prior.degrees_of_freedom, prior.covariance,
            log_gammas,
        )
        dev = (params.means - prior.mean) @ factor.inverse.T
        log_mean = _log_mean_prior(params.means, prior, jnp.sum(dev**2, -1), factor.half_log_det)
        return log_iw + jnp.sum(jnp.where(alive, log_mean, 0.0))

    @staticmethod
    def n_parameters(n_components, n_features):
        return n_features * (n_features + 1) // 2


class Diag:
    """Per-component, per-feature variances, ``sigma2_kd ~ InvGamma(nu0/2, psi0_d/2)``."""

    diagonal = True
    whitening = staticmethod(_diagonal_whitening)
    whiten = staticmethod(_diagonal_whiten)
    moments = staticmethod(_diagonal_moments)
    totals = staticmethod(_diagonal_totals)

    @staticmethod
    def factor(variances, n_components, n_features):
        sd = jnp.sqrt(variances)
        return Factor(sd, 1.0 / sd, 0.5 * jnp.sum(jnp.log(variances), -1))


    @staticmethod
    def unwhiten_vector(v, factor):
        return v * factor.cholesky

    @staticmethod
    def unwhiten_scatter(s, factor):
        return s * factor.cholesky**2

    @staticmethod
    def map_covariance(counts, scatter, deviation, shrinkage, alive, prior):
        r"""Mode of each variance: the full formula with D = 1, feature by feature.

        .. math::
            \hat\sigma^2_{kd} = \frac{\psi_{0d} + S_{kd} + \frac{\kappa_0 N_k}{\kappa_0 + N_k}
                (\bar x_{kd} - m_{0d})^2}{\nu_0 + N_k + 3}

        The exponent of :math:`\sigma^2_{kd}` is ``nu0/2 + 1`` from the inverse gamma,
        ``1/2`` from the normal on the mean and ``N_k/2`` from the data.
        """
        psi = prior.covariance + scatter + shrinkage[:, None] * deviation**2
        return psi / (prior.degrees_of_freedom + counts + 3)[:, None]

    log_gamma_arguments = staticmethod(_inverse_gamma_gamma_arguments)

    @staticmethod
    def log_prior_components(params, prior, alive, factor, log_gammas):
        """Sum over live k and all d of log InvGamma(sigma2_kd) + log N(mu_kd)."""
        variances = factor.cholesky**2
        log_ig = _log_inverse_gamma(
            variances, 0.5 * prior.degrees_of_freedom, 0.5 * prior.covariance, log_gammas[0]
        )
        dev_sq = ((params.means - prior.mean) * factor.inverse) ** 2
        log_mean = (
            -0.5 * LOG_2PI + 0.5 * jnp.log(prior.mean_precision) - 0.5 * jnp.log(variances)
            - 0.5 * prior.mean_precision * dev_sq
        )
        return jnp.sum(jnp.where(alive[:, None], log_ig + log_mean, 0.0))

    @staticmethod
    def n_parameters(n_components, n_features):
        return n_components * n_features


class Spherical:
    """One variance per component, ``sigma2_k ~ InvGamma(nu0/2, psi0/2)``."""

    diagonal = True
    whitening = staticmethod(_diagonal_whitening)
    whiten = staticmethod(_diagonal_whiten)
    moments = staticmethod(_diagonal_moments)
    totals = staticmethod(_diagonal_totals)

    @staticmethod
    def factor(variances, n_components, n_features):
        sd = jnp.sqrt(variances)
        return Factor(sd, 1.0 / sd, 0.5 * n_features * jnp.log(variances))


    @staticmethod
    def unwhiten_vector(v, factor):
        return v * factor.cholesky[:, None]

    @staticmethod
    def unwhiten_scatter(s, factor):
        return s * (factor.cholesky**2)[:, None]

    @staticmethod
    def map_covariance(counts, scatter, deviation, shrinkage, alive, prior):
        r"""Mode of each component's variance.

        .. math::
            \hat\sigma^2_k = \frac{\psi_0 + \mathrm{tr}\, S_k + \frac{\kappa_0 N_k}
                {\kappa_0 + N_k} \lVert\bar x_k - m_0\rVert^2}{\nu_0 + D (N_k + 1) + 2}

        Derivation: the log density in :math:`\sigma^2_k` (at :math:`\mu_k = m_k`) is
        :math:`-(\nu_0/2 + 1 + D/2 + N_k D/2) \log\sigma^2_k - B_k / (2\sigma^2_k)`, with
        ``nu0/2 + 1`` from the inverse-gamma prior, ``D/2`` from
        :math:`\mu_k \mid \sigma^2_k \sim N(m_0, \sigma^2_k I/\kappa_0)`, ``N_k D/2`` from
        the data, and :math:`B_k` the numerator above. The maximum is at
        :math:`B_k / (\nu_0 + 2 + D + N_k D)`. This is the VII update of Fraley & Raftery
        (2007, Table 2).
        """
        d = deviation.shape[-1]
        psi = prior.covariance + jnp.sum(scatter, -1) + shrinkage * jnp.sum(deviation**2, -1)
        return psi / (prior.degrees_of_freedom + d * (counts + 1) + 2)

    log_gamma_arguments = staticmethod(_inverse_gamma_gamma_arguments)

    @staticmethod
    def log_prior_components(params, prior, alive, factor, log_gammas):
        """Sum over live k of log InvGamma(sigma2_k) + log N(mu_k | m0, sigma2_k I / kappa0)."""
        variances = factor.cholesky**2
        log_ig = _log_inverse_gamma(
            variances, 0.5 * prior.degrees_of_freedom, 0.5 * prior.covariance, log_gammas[0]
        )
        dev_sq = jnp.sum((params.means - prior.mean) ** 2, -1) / variances
        log_mean = _log_mean_prior(params.means, prior, dev_sq, factor.half_log_det)
        return jnp.sum(jnp.where(alive, log_ig + log_mean, 0.0))

    @staticmethod
    def n_parameters(n_components, n_features):
        return n_components


KINDS = {"full": Full, "tied": Tied, "diag": Diag, "spherical": Spherical}


def as_full_covariances(covariances, covariance_type, n_components, n_features):
    """Covariances of any type as K full matrices.

    Parameters
    ----------
    covariances : array
        full (K, D, D), tied (D, D), diag (K, D) or spherical (K,), as in scikit-learn.
    covariance_type : {"full", "tied", "diag", "spherical"}
    n_components, n_features : int
        K and D.

    Returns
    -------
    ndarray of shape (n_components, n_features, n_features), float64
    """
    if covariance_type not in KINDS:
        raise ValueError(
            f"covariance_type must be one of {', '.join(map(repr, KINDS))}; "
            f"got {covariance_type!r}."
        )
    c = np.asarray(covariances, dtype=np.float64)
    k, d = n_components, n_features
    expected = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}
    if c.shape != expected[covariance_type]:
        raise ValueError(
            f"covariances must have shape {expected[covariance_type]} for "
            f"covariance_type={covariance_type!r} with K={k}, D={d}; got shape {c.shape}."
        )
    if covariance_type == "full":
        return c.copy()
    if covariance_type == "tied":
        return np.broadcast_to(c, (k, d, d)).copy()
    if covariance_type == "diag":
        return np.einsum("kd,de->kde", c, np.eye(d))
    return c[:, None, None] * np.eye(d)
