"""The NumPyro model of the mixture posterior: the same density the EM core climbs.

``numpyro.infer.util.log_density(gmm_model, (x, prior, covariance_type), {}, theta)`` at any
theta = (weights, means, covariances) equals :func:`bayes_gmm.em.log_posterior` at theta,
normalising constants included. That equality is what makes "the MAP" and "the
posterior" two summaries of one distribution, and a test keeps it.

The sample sites are the natural parameters, with the shapes of
:class:`bayes_gmm.GMMParams`: ``weights`` (K,), ``means`` (K, D) and ``covariances``
(full (K, D, D), tied (D, D), diag (K, D), spherical (K,)). Covariances are sampled as
matrices (``InverseWishart``) rather than as Cholesky factors, because a factor's density
differs from the matrix's by a Jacobian and the contract would break. The component
labels are marginalised out (``MixtureSameFamily``): there are no discrete sites, so NUTS
can run on the model directly.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bayes_gmm.em import GMMParams
from bayes_gmm.priors import GMMPrior


def _component_distribution(params: GMMParams, covariance_type: str):
    """The K component densities N(mu_k, Sigma_k), batch shape (K,), event shape (D,)."""
    means, covariances = params.means, params.covariances
    if covariance_type in ("full", "tied"):
        scale_tril = jnp.linalg.cholesky(covariances)
        if covariance_type == "tied":
            scale_tril = jnp.broadcast_to(scale_tril, means.shape + means.shape[-1:])
        return dist.MultivariateNormal(means, scale_tril=scale_tril)
    variances = covariances if covariance_type == "diag" else covariances[:, None]
    return dist.Normal(means, jnp.sqrt(variances)).to_event(1)


def mixture_distribution(params: GMMParams, covariance_type: str = "full"):
    """``sum_k pi_k N(mu_k, Sigma_k)`` as a NumPyro distribution over R^D."""
    return dist.MixtureSameFamily(
        dist.Categorical(probs=params.weights),
        _component_distribution(params, covariance_type),
    )


def gmm_model(x, prior: GMMPrior, covariance_type: str = "full"):
    """The posterior of DESIGN.md as a NumPyro model.

    Parameters
    ----------
    x : Array of shape (n_samples, n_features) or None
        Observed data; ``None`` draws from the prior predictive (shape from ``prior``).
    prior : GMMPrior
        From :func:`bayes_gmm.default_prior`; covariance shapes follow the type.
    covariance_type : {"full", "tied", "diag", "spherical"}
    """
    alpha, m0, kappa0, nu0, psi0 = (jnp.asarray(a) for a in prior)
    n_components = alpha.shape[0]
    n_features = m0.shape[0]
    weights = numpyro.sample("weights", dist.Dirichlet(alpha))

    if covariance_type == "tied":
        covariances = numpyro.sample("covariances", dist.InverseWishart(nu0, psi0))
        mean_tril = jnp.linalg.cholesky(covariances) / jnp.sqrt(kappa0)
        with numpyro.plate("component", n_components):
            means = numpyro.sample("means", dist.MultivariateNormal(m0, scale_tril=mean_tril))
    else:
        with numpyro.plate("component", n_components):
            if covariance_type == "full":
                covariances = numpyro.sample("covariances", dist.InverseWishart(nu0, psi0))
                mean_tril = jnp.linalg.cholesky(covariances) / jnp.sqrt(kappa0)
                means = numpyro.sample(
                    "means", dist.MultivariateNormal(m0, scale_tril=mean_tril)
                )
            elif covariance_type == "diag":
                shape = jnp.broadcast_to(0.5 * nu0, (n_features,))
                covariances = numpyro.sample(
                    "covariances", dist.InverseGamma(shape, 0.5 * psi0).to_event(1)
                )
                means = numpyro.sample(
                    "means", dist.Normal(m0, jnp.sqrt(covariances / kappa0)).to_event(1)
                )
            else:
                covariances = numpyro.sample(
                    "covariances", dist.InverseGamma(0.5 * nu0, 0.5 * psi0)
                )
                scale = jnp.sqrt(covariances / kappa0)[:, None]
                means = numpyro.sample("means", dist.Normal(m0, scale).to_event(1))

    params = GMMParams(weights, means, covariances)
    n_samples = None if x is None else x.shape[0]
    with numpyro.plate("data", n_samples if n_samples is not None else 1):
        numpyro.sample("x", mixture_distribution(params, covariance_type), obs=x)


def init_values(params: GMMParams) -> dict:
    """Site values for ``numpyro.infer.init_to_value``: start a sampler at ``params``."""
    return {"weights": params.weights, "means": params.means, "covariances": params.covariances}
