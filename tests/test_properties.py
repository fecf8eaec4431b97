"""Properties of the MAP core over generated data sets, priors and seeds (hypothesis).

Each property is a statement that must hold for *every* input, so hypothesis draws the
inputs: a seed that fixes a data set (N = 60 points from two random clusters, D = 2), a
random non-default prior, random starting parameters and a covariance type. Shapes and
EM settings are the same in every example, so the EM core compiles once per covariance
type and the examples cost milliseconds; examples are few (``max_examples``) and
derandomised, so the suite is reproducible.

- EM never lowers the log posterior;
- the MAP does not depend on the order of the rows, and relabelling the starting
  components (with the Dirichlet concentrations) relabels the MAP;
- the NumPyro model's log density equals the EM core's log posterior at random
  parameters under random priors;
- an affine map of the data, x -> A x + b, with the matching map of the prior
  (m0 -> A m0 + b, Psi0 -> A Psi0 A^T) and of the start, maps the MAP the same way
  (means -> A mu + b, covariances -> A Sigma A^T, weights unchanged);
- float32 and float64 give the same MAP within float32 tolerance (float64 pass only).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from conftest import COVARIANCE_TYPES, DTYPE, X64, blobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpyro.infer.util import log_density
from test_em import random_prior

from bayes_gmm import GMMParams, GMMPrior, default_prior, fit_map, log_posterior
from bayes_gmm.model import gmm_model, init_values

N, D, K = 60, 2, 2
# A fixed number of EM steps (tol = 0 never stops early unless the step changes nothing),
# so that two runs that should agree take the same path step for step.
MAX_ITER = 40
# Relative agreement of two MAPs computed by the same steps in another order or frame:
# rounding only, amplified a little by EM's contraction rate.
MAP_RTOL = 1e-7 if X64 else 2e-3

# Every property runs for each covariance type (pytest parametrises the type, so none
# is left to chance), on a few generated data sets, priors and starts each.
PROPERTY = settings(max_examples=4, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

seeds = st.integers(min_value=0, max_value=2**16)


def case(seed, covariance_type, dtype=DTYPE):
    """Data, a random prior and a random start, all fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    x = blobs(seed, N, D, K, separation=3.0).astype(dtype)
    prior = random_prior(rng, K, D, covariance_type)
    start = GMMParams(*(jnp.asarray(a, dtype) for a in
                        reference.random_params(rng, K, D, covariance_type)))
    return x, prior, start


def fit(x, prior, start, covariance_type, max_iter=MAX_ITER):
    params, info = fit_map(jax.random.key(0), x, prior, start,
                           covariance_type=covariance_type, max_iter=max_iter, tol=0.0)
    return jax.device_get((params, info))


def assert_same_map(got, want, covariance_type, scale=1.0):
    """Weights absolutely, means and covariances relative to the data's scale."""
    np.testing.assert_allclose(got.weights, want.weights, atol=MAP_RTOL * 5)
    np.testing.assert_allclose(got.means, want.means, rtol=MAP_RTOL,
                               atol=MAP_RTOL * 10 * scale)
    np.testing.assert_allclose(got.covariances, want.covariances, rtol=MAP_RTOL * 5,
                               atol=MAP_RTOL * 10 * scale**2)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@PROPERTY
@given(seed=seeds)
def test_em_never_lowers_the_log_posterior(seed, covariance_type):
    x, prior, start = case(seed, covariance_type)
    _, info = fit(x, prior, start, covariance_type)
    history = np.asarray(info.history[: int(info.n_iter) + 1], np.float64)
    assert np.all(np.isfinite(history))
    # Rounding of a sum of N log densities: a few ulps of the total per step.
    slack = (1e-12 if X64 else 4e-6) * np.abs(history[1:]) + 1e-9
    assert np.all(np.diff(history) >= -slack), np.diff(history).min()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@PROPERTY
@given(seed=seeds, permutation_seed=st.integers(0, 1000))
def test_map_does_not_depend_on_the_order_of_the_rows(seed, covariance_type,
                                                      permutation_seed):
    x, prior, start = case(seed, covariance_type)
    order = np.random.default_rng(permutation_seed).permutation(N)
    want, _ = fit(x, prior, start, covariance_type)
    got, _ = fit(x[order], prior, start, covariance_type)
    assert_same_map(GMMParams(*got), GMMParams(*want), covariance_type, np.abs(x).max())


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@PROPERTY
@given(seed=seeds)
def test_relabelling_the_start_relabels_the_map(seed, covariance_type):
    x, prior, start = case(seed, covariance_type)
    swap = np.array([1, 0])
    want, _ = fit(x, prior, start, covariance_type)
    relabelled_prior = prior._replace(weight_concentration=prior.weight_concentration[swap])
    covariances = start.covariances if covariance_type == "tied" else start.covariances[swap]
    relabelled_start = GMMParams(start.weights[swap], start.means[swap], covariances)
    got, _ = fit(x, relabelled_prior, relabelled_start, covariance_type)
    want_covariances = want.covariances if covariance_type == "tied" else want.covariances[swap]
    assert_same_map(GMMParams(*got),
                    GMMParams(want.weights[swap], want.means[swap], want_covariances),
                    covariance_type, np.abs(x).max())


@partial(jax.jit, static_argnames="covariance_type")
def numpyro_log_density(x, prior, params, covariance_type):
    # Jitted: one compilation per covariance type instead of NumPyro's distributions
    # dispatching (and compiling) op by op in every example.
    return log_density(gmm_model, (x, prior, covariance_type), {}, init_values(params))[0]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@PROPERTY
@given(seed=seeds)
def test_numpyro_log_density_is_the_em_log_posterior(seed, covariance_type):
    rng = np.random.default_rng(seed)
    x = blobs(seed, N, D, K).astype(DTYPE)
    prior = random_prior(rng, K, D, covariance_type)
    params = GMMParams(*(jnp.asarray(a, DTYPE) for a in
                         reference.random_params(rng, K, D, covariance_type)))
    prior = GMMPrior(*(jnp.asarray(a, DTYPE) for a in prior))
    numpyro_value = numpyro_log_density(x, prior, params, covariance_type)
    em_value = log_posterior(x, params, prior, covariance_type)
    np.testing.assert_allclose(float(numpyro_value), float(em_value),
                               rtol=1e-9 if X64 else 2e-5)


def affine_map(rng, covariance_type):
    """A random invertible A of the form the covariance type is closed under."""
    if covariance_type in ("full", "tied"):
        a = rng.normal(size=(D, D))
        return a + np.sign(np.linalg.det(a) or 1.0) * 2 * np.eye(D)
    if covariance_type == "diag":
        return np.diag(rng.uniform(0.2, 5.0, D) * rng.choice([-1, 1], D))
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))  # spherical: a scaled rotation
    return rng.uniform(0.2, 5.0) * q


def transform_covariances(a, covariances, covariance_type):
    if covariance_type in ("full", "tied"):
        return a @ covariances @ a.T
    if covariance_type == "diag":
        return covariances * np.diag(a) ** 2
    # |det A|^(2/D) is the squared scale of a scaled rotation (det A < 0 for a reflection).
    return covariances * (np.abs(np.linalg.det(a)) ** (2 / D))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@PROPERTY
@given(seed=seeds)
def test_affine_map_of_data_and_prior_maps_the_map(seed, covariance_type):
    rng = np.random.default_rng(seed + 1)
    x, prior, start = case(seed, covariance_type)
    a = affine_map(rng, covariance_type)
    b = rng.normal(scale=10.0, size=D)
    moved_x = (np.asarray(x, np.float64) @ a.T + b).astype(DTYPE)
    moved_prior = GMMPrior(
        prior.weight_concentration, prior.mean @ a.T + b, prior.mean_precision,
        prior.degrees_of_freedom, transform_covariances(a, prior.covariance, covariance_type),
    )
    moved_start = GMMParams(
        start.weights, jnp.asarray(np.asarray(start.means) @ a.T + b, DTYPE),
        jnp.asarray(transform_covariances(a, np.asarray(start.covariances, np.float64),
                                          covariance_type), DTYPE),
    )
    want, _ = fit(x, prior, start, covariance_type)
    got, _ = fit(moved_x, moved_prior, moved_start, covariance_type)
    expected = GMMParams(
        want.weights, np.asarray(want.means, np.float64) @ a.T + b,
        transform_covariances(a, np.asarray(want.covariances, np.float64), covariance_type),
    )
    # Compare in the original frame's units: map the difference back through A^{-1}.
    inverse = np.linalg.inv(a)
    np.testing.assert_allclose(got.weights, expected.weights, atol=MAP_RTOL * 5)
    means_back = (np.asarray(got.means, np.float64) - b) @ inverse.T
    np.testing.assert_allclose(means_back, want.means, rtol=MAP_RTOL,
                               atol=MAP_RTOL * 10 * np.abs(x).max())
    covariances_back = transform_covariances(inverse, np.asarray(got.covariances, np.float64),
                                             covariance_type)
    np.testing.assert_allclose(covariances_back, want.covariances, rtol=MAP_RTOL * 5,
                               atol=MAP_RTOL * 10 * np.abs(x).max() ** 2)


@pytest.mark.skipif(not X64, reason="float64 exists only with JAX_ENABLE_X64=1 (second pass)")
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@PROPERTY
@given(seed=seeds)
def test_float32_and_float64_agree_within_float32_tolerance(seed, covariance_type):
    x64, prior, start64 = case(seed, covariance_type, np.float64)
    start32 = GMMParams(*(a.astype(jnp.float32) for a in start64))
    want, info64 = fit(x64, prior, start64, covariance_type)
    got, info32 = fit(x64.astype(np.float32), prior, start32, covariance_type)
    assert got.means.dtype == np.float32 and want.means.dtype == np.float64
    scale = np.abs(x64).max()
    np.testing.assert_allclose(got.weights, want.weights, atol=1e-3)
    np.testing.assert_allclose(got.means, want.means, rtol=1e-3, atol=1e-3 * scale)
    np.testing.assert_allclose(got.covariances, want.covariances, rtol=5e-3,
                               atol=1e-3 * scale**2)
    np.testing.assert_allclose(float(info32.log_posterior), float(info64.log_posterior),
                               rtol=1e-5)


def test_default_prior_is_affine_equivariant_too():
    """The data-dependent default prior moves with the data, so the default MAP does."""
    x = blobs(3, N, D, K).astype(np.float64)
    a = np.array([[2.0, 0.5], [-0.3, 1.5]])
    b = np.array([100.0, -50.0])
    prior = default_prior(x, K, "full")
    moved = default_prior(x @ a.T + b, K, "full")
    np.testing.assert_allclose(moved.mean, prior.mean @ a.T + b)
    np.testing.assert_allclose(moved.covariance, a @ prior.covariance @ a.T, rtol=1e-10)
