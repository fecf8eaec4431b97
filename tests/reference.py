"""Independent reference implementations (NumPy and SciPy only) for the tests."""

import numpy as np
from scipy import stats
from scipy.special import logsumexp


def covariance_matrices(covariances, covariance_type, k, d):
    """Any covariance type as K full (D, D) matrices."""
    c = np.asarray(covariances, dtype=np.float64)
    if covariance_type == "full":
        return c
    if covariance_type == "tied":
        return np.broadcast_to(c, (k, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(v) for v in c])
    return np.stack([s * np.eye(d) for s in c])


def component_log_densities(x, params, covariance_type):
    """log pi_k + log N(x_n | mu_k, Sigma_k), shape (N, K), by SciPy one component at a time."""
    weights, means, covariances = (np.asarray(a, np.float64) for a in params)
    k, d = means.shape
    sigmas = covariance_matrices(covariances, covariance_type, k, d)
    return np.stack(
        [
            np.log(weights[j]) + stats.multivariate_normal(means[j], sigmas[j]).logpdf(x)
            for j in range(k)
        ],
        axis=1,
    ).reshape(len(x), k)


def e_step(x, params, covariance_type):
    """Naive E-step: (log responsibilities, per-point log density)."""
    log_prob = component_log_densities(np.asarray(x, np.float64), params, covariance_type)
    log_density = logsumexp(log_prob, axis=1)
    return log_prob - log_density[:, None], log_density


def log_prior(params, prior, covariance_type):
    """log p(theta) of the model in DESIGN.md, from SciPy's distributions."""
    weights, means, covariances = (np.asarray(a, np.float64) for a in params)
    alpha, m0, kappa0, nu0, psi0 = (np.asarray(a, np.float64) for a in prior)
    k, d = means.shape
    # SciPy wants the weights on the simplex to 1e-9; float32 ones are off by ~1e-8.
    total = stats.dirichlet(alpha).logpdf(weights / weights.sum())
    if covariance_type in ("full", "tied"):
        sigmas = covariance_matrices(covariances, covariance_type, k, d)
        iw = stats.invwishart(df=float(nu0), scale=psi0)
        if covariance_type == "full":
            total += sum(iw.logpdf(s) for s in sigmas)
        else:
            total += iw.logpdf(covariances)
        total += sum(
            stats.multivariate_normal(m0, s / kappa0).logpdf(mu)
            for mu, s in zip(means, sigmas, strict=True)
        )
    elif covariance_type == "diag":
        total += stats.invgamma(nu0 / 2, scale=psi0 / 2).logpdf(covariances).sum()
        total += stats.norm(m0, np.sqrt(covariances / kappa0)).logpdf(means).sum()
    else:
        total += stats.invgamma(nu0 / 2, scale=psi0 / 2).logpdf(covariances).sum()
        total += sum(
            stats.multivariate_normal(m0, s / kappa0 * np.eye(d)).logpdf(mu)
            for mu, s in zip(means, covariances, strict=True)
        )
    return float(total)


def log_posterior(x, params, prior, covariance_type):
    return float(e_step(x, params, covariance_type)[1].sum()) + log_prior(
        params, prior, covariance_type
    )


def random_params(rng, k, d, covariance_type):
    """Random valid parameters of the given covariance type (float64 NumPy arrays)."""
    weights = rng.dirichlet(np.full(k, 3.0))
    means = rng.normal(scale=2.0, size=(k, d))
    if covariance_type == "full":
        a = rng.normal(size=(k, d, d))
        covariances = a @ np.swapaxes(a, 1, 2) / d + 0.5 * np.eye(d)
    elif covariance_type == "tied":
        a = rng.normal(size=(d, d))
        covariances = a @ a.T / d + 0.5 * np.eye(d)
    elif covariance_type == "diag":
        covariances = rng.uniform(0.3, 2.0, size=(k, d))
    else:
        covariances = rng.uniform(0.3, 2.0, size=k)
    return weights, means, covariances
