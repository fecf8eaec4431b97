"""The contract: the NumPyro model's log density is the EM core's log posterior.

`numpyro.infer.util.log_density` of `gmm_model` and `em.log_posterior` are written
independently (NumPyro's distributions against the core's own densities); they must give
the same number at any parameter value, for every covariance type.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import reference
from conftest import DTYPE, X64, blobs
from numpyro.infer.util import log_density
from test_em import random_prior

from bayes_gmm import GMMParams, log_posterior
from bayes_gmm.model import gmm_model, init_values, mixture_distribution


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k, d", [(1, 1), (3, 2), (2, 4)])
def test_log_density_equals_em_log_posterior(covariance_type, seed, k, d):
    rng = np.random.default_rng(seed)
    x = blobs(seed, 150, d, k).astype(DTYPE)
    prior = random_prior(rng, k, d, covariance_type)
    params = GMMParams(*(jnp.asarray(a, DTYPE) for a in
                         reference.random_params(rng, k, d, covariance_type)))
    numpyro_value, _ = log_density(gmm_model, (x, prior, covariance_type), {},
                                   init_values(params))
    em_value = log_posterior(x, params, prior, covariance_type)
    np.testing.assert_allclose(float(numpyro_value), float(em_value),
                               rtol=1e-8 if X64 else 2e-5)
    np.testing.assert_allclose(float(numpyro_value),
                               reference.log_posterior(x, params, prior, covariance_type),
                               rtol=1e-8 if X64 else 2e-5)


def test_mixture_distribution_log_prob_matches_reference(covariance_type):
    rng = np.random.default_rng(5)
    x = blobs(5, 100, 3, 2)
    params = reference.random_params(rng, 2, 3, covariance_type)
    got = mixture_distribution(GMMParams(*(jnp.asarray(a, DTYPE) for a in params)),
                               covariance_type).log_prob(x)
    np.testing.assert_allclose(got, reference.e_step(x, params, covariance_type)[1],
                               rtol=1e-10 if X64 else 1e-5)
