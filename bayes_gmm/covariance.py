"""What differs between the four covariance types, behind one set of function names.

The EM core (:mod:`bayes_gmm.em`) is written once. Everything that depends on the
covariance type lives here, as one class of static functions per type:

- ``factor(covariances, K, D)`` -> :class:`Factor`, the Cholesky factor L of every component
  covariance with its inverse and half log-determinant (computed once per EM step);
- ``whiten(x, means, factor)`` -> ``y`` of shape (C, K, D), ``y_nk = L_k^{-1} (x_n - mu_k)``,
  so that the Mahalanobis distance is ``|y_nk|^2``;
- ``second_moment(r, y)`` -> the responsibility-weighted ``sum_n r_nk y_nk y_nk^T`` (full
  and tied) or only its diagonal (diag and spherical);
- ``unwhiten_vector`` / ``unwhiten_scatter`` map whitened statistics back to data units;
- ``map_covariance(...)`` -> the exact MAP update of the covariance (docstrings derive it);
- ``log_prior_components(params, prior, alive)`` -> log p(mu, Sigma) of the live components;
- ``n_parameters(K, D)`` -> free covariance parameters, for BIC/AIC.

Shapes of ``covariances`` follow scikit-learn: full (K, D, D), tied (D, D), diag (K, D),
spherical (K,). No covariance matrix is ever inverted: whitening uses the inverse of the
triangular Cholesky factor (a triangular solve against the identity, as scikit-learn does),
which keeps the E-step one large matrix product.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import gammaln, multigammaln

LOG_2PI = 1.8378770664093453


class Factor(NamedTuple):
    """Cholesky factor of the component covariances."""

    cholesky: jnp.ndarray  # full (K, D, D) | tied (D, D): lower L; diag (K, D) | sph (K,): sd
    inverse: jnp.ndarray  # same shape: L^{-1}, or 1 / sd
    half_log_det: jnp.ndarray  # (K,) 0.5 log |Sigma_k|


def _inverse_cholesky(cholesky):
    eye = jnp.broadcast_to(jnp.eye(cholesky.shape[-1], dtype=cholesky.dtype), cholesky.shape)
    return solve_triangular(cholesky, eye, lower=True)


def _log_inverse_gamma(value, shape, scale):
    """log InvGamma(value | shape, scale), elementwise."""
    return shape * jnp.log(scale) - gammaln(shape) - (shape + 1) * jnp.log(value) - scale / value


def _log_inverse_wishart(log_det, trace_scale_precision, dof, scale):
    """log InvWishart(Sigma | dof, scale) from log|Sigma| and tr(scale Sigma^{-1})."""
    d = scale.shape[-1]
    _, log_det_scale = jnp.linalg.slogdet(scale)
    return (
        0.5 * dof * log_det_scale
        - 0.5 * dof * d * jnp.log(2.0)
        - multigammaln(0.5 * dof, d)
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


def _full_scatter(r, y):
    return jnp.einsum("ck,ckd,cke->kde", r, y, y)


def _diagonal_scatter(r, y):
    return jnp.einsum("ck,ckd->kd", r, y * y)


class Full:
    """One unrestricted covariance per component, ``Sigma_k ~ InvWishart(nu0, Psi0)``."""

    diagonal = False
    second_moment = staticmethod(_full_scatter)

    @staticmethod
    def factor(covariances, n_components, n_features):
        cholesky = jnp.linalg.cholesky(covariances)
        diag = jnp.diagonal(cholesky, axis1=-2, axis2=-1)
        return Factor(cholesky, _inverse_cholesky(cholesky), jnp.sum(jnp.log(diag), -1))

    @staticmethod
    def whiten(x, means, factor):
        # One (C, D) x (D, K*D) product instead of K small ones: y_nk = L_k^{-1} x_n - b_k.
        k, d = means.shape
        projection = jnp.transpose(factor.inverse, (2, 0, 1)).reshape(d, k * d)
        offset = jnp.einsum("kde,ke->kd", factor.inverse, means)
        return (x @ projection).reshape(x.shape[0], k, d) - offset

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

    @staticmethod
    def log_prior_components(params, prior, alive, factor):
        """log IW(Sigma_k) + log N(mu_k | m0, Sigma_k / kappa0), summed over live k."""
        psi_whitened = factor.inverse @ prior.covariance @ jnp.swapaxes(factor.inverse, -1, -2)
        trace = jnp.trace(psi_whitened, axis1=-2, axis2=-1)
        log_iw = _log_inverse_wishart(
            2 * factor.half_log_det, trace, prior.degrees_of_freedom, prior.covariance
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
    second_moment = staticmethod(_full_scatter)

    @staticmethod
    def factor(covariance, n_components, n_features):
        cholesky = jnp.linalg.cholesky(covariance)
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(cholesky)))
        return Factor(
            cholesky, _inverse_cholesky(cholesky), jnp.full(n_components, half_log_det)
        )

    @staticmethod
    def whiten(x, means, factor):
        # The shared factor whitens x once; each component only shifts it.
        projection = factor.inverse.T
        return (x @ projection)[:, None, :] - (means @ projection)[None, :, :]

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

    @staticmethod
    def log_prior_components(params, prior, alive, factor):
        """log IW(Sigma) + sum over live k of log N(mu_k | m0, Sigma / kappa0)."""
        trace = jnp.trace(factor.inverse @ prior.covariance @ factor.inverse.T)
        log_iw = _log_inverse_wishart(
            2 * factor.half_log_det[0], trace, prior.degrees_of_freedom, prior.covariance
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
    second_moment = staticmethod(_diagonal_scatter)

    @staticmethod
    def factor(variances, n_components, n_features):
        sd = jnp.sqrt(variances)
        return Factor(sd, 1.0 / sd, 0.5 * jnp.sum(jnp.log(variances), -1))

    @staticmethod
    def whiten(x, means, factor):
        return (x[:, None, :] - means[None]) * factor.inverse[None]

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

    @staticmethod
    def log_prior_components(params, prior, alive, factor):
        """Sum over live k and all d of log InvGamma(sigma2_kd) + log N(mu_kd)."""
        variances = factor.cholesky**2
        log_ig = _log_inverse_gamma(
            variances, 0.5 * prior.degrees_of_freedom, 0.5 * prior.covariance
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
    second_moment = staticmethod(_diagonal_scatter)

    @staticmethod
    def factor(variances, n_components, n_features):
        sd = jnp.sqrt(variances)
        return Factor(sd, 1.0 / sd, 0.5 * n_features * jnp.log(variances))

    @staticmethod
    def whiten(x, means, factor):
        return (x[:, None, :] - means[None]) * factor.inverse[None, :, None]

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

    @staticmethod
    def log_prior_components(params, prior, alive, factor):
        """Sum over live k of log InvGamma(sigma2_k) + log N(mu_k | m0, sigma2_k I / kappa0)."""
        variances = factor.cholesky**2
        log_ig = _log_inverse_gamma(
            variances, 0.5 * prior.degrees_of_freedom, 0.5 * prior.covariance
        )
        dev_sq = jnp.sum((params.means - prior.mean) ** 2, -1) / variances
        log_mean = _log_mean_prior(params.means, prior, dev_sq, factor.half_log_det)
        return jnp.sum(jnp.where(alive, log_ig + log_mean, 0.0))

    @staticmethod
    def n_parameters(n_components, n_features):
        return n_components


KINDS = {"full": Full, "tied": Tied, "diag": Diag, "spherical": Spherical}

