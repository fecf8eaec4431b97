"""Conjugate priors of the mixture, built and checked once, at the boundary.

Every later layer (the EM core, the NumPyro model, the Gibbs sampler) reads one
:class:`GMMPrior` and trusts it: this module is where hyperparameters are validated,
with messages that name the parameter, what was expected, what came and what to do.
It works in NumPy on concrete values; nothing here is traced by JAX.

The model, for K components and D features (see DESIGN.md):

- weights ``pi ~ Dirichlet(alpha)``
- ``full``: ``Sigma_k ~ InvWishart(nu0, Psi0)``, ``mu_k | Sigma_k ~ N(m0, Sigma_k / kappa0)``
- ``tied``: one ``Sigma ~ InvWishart(nu0, Psi0)``, ``mu_k | Sigma ~ N(m0, Sigma / kappa0)``
- ``diag``: per feature ``sigma2_kd ~ InvGamma(nu0 / 2, psi0_d / 2)`` (the one-dimensional
  inverse Wishart), ``mu_kd | . ~ N(m0_d, sigma2_kd / kappa0)``
- ``spherical``: ``sigma2_k ~ InvGamma(nu0 / 2, psi0 / 2)``,
  ``mu_k | . ~ N(m0, sigma2_k I / kappa0)``
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bayes_gmm.checks import as_float_array, check_choice

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

# Eigenvalues of the empirical covariance below this fraction of the largest are raised
# to it, so that the default scale matrix is positive definite for any data.
EIGENVALUE_FLOOR = 1e-6


class GMMPrior(NamedTuple):
    """Hyperparameters of the conjugate prior (scikit-learn's names, without ``_prior``).

    The shape of ``covariance`` follows the covariance type, as in scikit-learn:
    ``(D, D)`` for ``full`` and ``tied``, ``(D,)`` for ``diag``, ``()`` for ``spherical``.
    """

    weight_concentration: np.ndarray  # (K,)  alpha, Dirichlet concentration of the weights
    mean: np.ndarray  # (D,)  m0, prior mean of every component mean
    mean_precision: np.ndarray  # ()  kappa0, prior pseudo-count of the means
    degrees_of_freedom: np.ndarray  # ()  nu0, inverse-Wishart degrees of freedom
    covariance: np.ndarray  # (D, D) | (D,) | ()  Psi0, inverse-Wishart scale


def check_covariance_type(covariance_type) -> str:
    """Return ``covariance_type`` if it is one of :data:`COVARIANCE_TYPES`, else raise."""
    return check_choice(covariance_type, "covariance_type", COVARIANCE_TYPES)


def empirical_scale(x: np.ndarray) -> np.ndarray:
    """The empirical covariance of ``x``, made positive definite, shape ``(D, D)``.

    A constant column, duplicated points or D >= N make the sample covariance singular.
    Its eigenvalues are then floored at ``EIGENVALUE_FLOOR`` times the largest one, which
    keeps the eigenvectors (the correlation structure) and changes nothing for data whose
    covariance is well conditioned. When every point is the same (or N = 1) the data
    carry no scale at all and the identity is returned: pass ``covariance_prior`` then.
    """
    x = np.asarray(x, dtype=np.float64)
    n_samples, n_features = x.shape
    if n_samples < 2:
        return np.eye(n_features)
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    largest = eigenvalues.max()
    if not largest > 0:
        return np.eye(n_features)
    floored = np.maximum(eigenvalues, EIGENVALUE_FLOOR * largest)
    if np.array_equal(floored, eigenvalues):
        return cov
    scale = (eigenvectors * floored) @ eigenvectors.T
    return (scale + scale.T) / 2


def default_prior(
    x,
    n_components: int,
    covariance_type: str = "full",
    *,
    weight_concentration_prior=None,
    mean_prior=None,
    mean_precision_prior=None,
    degrees_of_freedom_prior=None,
    covariance_prior=None,
) -> GMMPrior:
    """The data-dependent default prior of Fraley & Raftery (2007), with overrides.

    Parameters
    ----------
    x : array of shape (n_samples, n_features)
        The data, already checked (finite, numeric, 2-D); see
        :func:`bayes_gmm.checks.check_data` for a checked conversion.
    n_components : int
        K, the number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
    weight_concentration_prior : float or array of shape (K,), default 1.0
        alpha; 1 is flat on the simplex, below 1 favours empty components.
    mean_prior : array of shape (D,), default ``mean(x)``
        m0.
    mean_precision_prior : float, default 0.01
        kappa0, how many data points the prior mean is worth.
    degrees_of_freedom_prior : float, default D + 2
        nu0; must exceed D - 1.
    covariance_prior : float or array, default ``cov(x) / K ** (2 / D)``
        Psi0, shape ``(D, D)`` for full and tied, ``(D,)`` for diag, a float for
        spherical. The default for diag is the diagonal of the full default and for
        spherical its mean diagonal entry. The empirical covariance is made positive
        definite first (see :func:`empirical_scale`).

    Returns
    -------
    GMMPrior
        float64 arrays; the EM core casts them to the dtype of the data.

    References
    ----------
    Fraley, C. and Raftery, A. E. (2007). Bayesian regularization for normal mixture
    estimation and model-based clustering. Journal of Classification 24, 155-181.
    """
    check_covariance_type(covariance_type)
    x = np.asarray(x, dtype=np.float64)
    n_features = x.shape[1]
    n_components = check_n_components(n_components)

    alpha = _concentration(weight_concentration_prior, n_components)
    mean = _mean(mean_prior, x, n_features)
    kappa0 = _positive_scalar(mean_precision_prior, "mean_precision_prior", default=0.01)
    nu0 = _degrees_of_freedom(degrees_of_freedom_prior, n_features)
    if covariance_prior is None:
        scale = empirical_scale(x) / n_components ** (2.0 / n_features)
        psi0 = {
            "full": scale,
            "tied": scale,
            "diag": np.diag(scale).copy(),
            "spherical": np.asarray(np.trace(scale) / n_features),
        }[covariance_type]
    else:
        psi0 = check_covariance_prior(covariance_prior, covariance_type, n_features)
    return GMMPrior(alpha, mean, np.asarray(kappa0), np.asarray(nu0), psi0)


def check_n_components(n_components) -> int:
    if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer):
        raise TypeError(
            f"n_components must be an integer >= 1; got {n_components!r} "
            f"of type {type(n_components).__name__}."
        )
    if n_components < 1:
        raise ValueError(f"n_components must be an integer >= 1; got {n_components}.")
    return int(n_components)


def _positive_scalar(value, name: str, default: float) -> float:
    if value is None:
        return default
    array = as_float_array(value, name)
    if array.ndim != 0:
        raise ValueError(f"{name} must be a single number; got an array of shape {array.shape}.")
    if not array > 0:
        raise ValueError(f"{name} must be > 0; got {float(array)}.")
    return float(array)


def _concentration(value, n_components: int) -> np.ndarray:
    name = "weight_concentration_prior"
    if value is None:
        return np.ones(n_components)
    alpha = as_float_array(value, name)
    if alpha.ndim == 0:
        alpha = np.full(n_components, float(alpha))
    if alpha.shape != (n_components,):
        raise ValueError(
            f"{name} must be a number or an array of shape (n_components,) = "
            f"({n_components},); got shape {alpha.shape}."
        )
    if not np.all(alpha > 0):
        raise ValueError(
            f"{name} must be > 0 (1 is flat on the simplex, < 1 favours empty components); "
            f"got {alpha.tolist()}."
        )
    return alpha


def _mean(value, x: np.ndarray, n_features: int) -> np.ndarray:
    if value is None:
        return x.mean(axis=0)
    mean = as_float_array(value, "mean_prior")
    if mean.shape != (n_features,):
        raise ValueError(
            f"mean_prior must have shape (n_features,) = ({n_features},); got shape {mean.shape}."
        )
    return mean


def _degrees_of_freedom(value, n_features: int) -> float:
    name = "degrees_of_freedom_prior"
    if value is None:
        return float(n_features + 2)
    nu0 = as_float_array(value, name)
    if nu0.ndim != 0:
        raise ValueError(f"{name} must be a single number; got an array of shape {nu0.shape}.")
    if not nu0 > n_features - 1:
        raise ValueError(
            f"{name} must be > n_features - 1 = {n_features - 1}; got {float(nu0)}. "
            f"The default is n_features + 2 = {n_features + 2}."
        )
    return float(nu0)


def check_covariance_prior(value, covariance_type: str, n_features: int) -> np.ndarray:
    """Check Psi0 for the given covariance type; return it as a float64 array."""
    name = "covariance_prior"
    psi0 = as_float_array(value, name)
    d = n_features
    if covariance_type in ("full", "tied"):
        if psi0.shape != (d, d):
            raise ValueError(
                f"{name} must have shape (n_features, n_features) = ({d}, {d}) for "
                f"covariance_type={covariance_type!r}; got shape {psi0.shape}."
            )
        if not np.allclose(psi0, psi0.T, rtol=1e-10, atol=1e-12 * np.abs(psi0).max()):
            raise ValueError(
                f"{name} must be symmetric positive definite ({d} x {d}); got a matrix that "
                "is not symmetric. Pass a covariance matrix, e.g. numpy.cov(x.T)."
            )
        smallest = np.linalg.eigvalsh(psi0).min()
        if not smallest > 0:
            raise ValueError(
                f"{name} must be symmetric positive definite ({d} x {d}); got a matrix with "
                f"smallest eigenvalue {smallest:.3g}. Pass a covariance matrix, "
                "e.g. numpy.cov(x.T)."
            )
        return (psi0 + psi0.T) / 2
    if covariance_type == "diag":
        if psi0.shape != (d,):
            raise ValueError(
                f"{name} must have shape (n_features,) = ({d},) for covariance_type='diag' "
                f"(one variance per feature); got shape {psi0.shape}."
            )
        if not np.all(psi0 > 0):
            raise ValueError(f"{name} must be > 0 in every feature; got {psi0.tolist()}.")
        return psi0
    if psi0.ndim != 0:
        raise ValueError(
            f"{name} must be a single number for covariance_type='spherical'; "
            f"got an array of shape {psi0.shape}."
        )
    if not psi0 > 0:
        raise ValueError(f"{name} must be > 0; got {float(psi0)}.")
    return psi0
