"""The Laplace approximation on padded rows and component slots equals the unpadded one.

The reference is the computation before padding, written here with NumPyro's own model
and transforms (``gmm_model``, ``StickBreakingTransform``, ``jax.hessian``) on the data's
own shapes: Newton's method from the MAP, the Cholesky factor of the Hessian, the same
standard normal draws mapped back. The padded programs must give the same centre, the
same factor on the real coordinates (and none between real and padded ones), the same
number of Newton steps and the same draws; and a new K of the same data width and row
bucket must compile nothing.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from conftest import EPS, X64, blobs, count_compilations, two_clusters
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

from bayes_gmm import BayesianGMM, GMMParams, GMMPrior, laplace, padding
from bayes_gmm.model import gmm_model, init_values

TOL = 1e-10 if X64 else 1000 * EPS
SETTINGS = {"num_chains": 2, "num_samples": 20}  # test_posterior's Laplace programs


@functools.partial(jax.jit, static_argnums=(3, 5, 6))
def unpadded_laplace(x, prior, params, covariance_type, key, num_chains, num_samples):
    """Centre, Cholesky factor, Newton steps and draws, without padding."""
    with numpyro.validation_enabled(False):
        model_args = (x, prior, covariance_type)
        values = unconstrain_fn(gmm_model, model_args, {}, init_values(params))
        start, unravel = ravel_pytree(values)

        def energy(flat):
            return potential_energy(gmm_model, model_args, {}, unravel(flat))

        flat, hessian, steps = laplace.newton(energy, start)
        cholesky = jnp.linalg.cholesky(0.5 * (hessian + hessian.T))
        z = laplace.standard_normal(key, values, covariance_type, num_chains, num_samples)
        draws = flat + jax.scipy.linalg.solve_triangular(cholesky.T, z[..., None])[..., 0]

        def to_params(u):
            sites = constrain_fn(gmm_model, model_args, {}, unravel(u))
            return GMMParams(sites["weights"], sites["means"], sites["covariances"])

        return flat, cholesky, steps, jax.vmap(jax.vmap(to_params))(draws)


def _fit(x, k, covariance_type):
    gmm = BayesianGMM(k, covariance_type=covariance_type, random_state=0).fit(x)
    prior = GMMPrior(*(np.asarray(a, x.dtype) for a in gmm.prior_))
    return x, prior, GMMParams(*(np.asarray(a, x.dtype) for a in gmm.params_))


def test_padded_laplace_equals_unpadded_and_a_new_k_compiles_nothing(covariance_type):
    """K = 2 on 40 points, then K = 3 on 50 (row bucket 64, 16 slots for both): the
    second compiles nothing, and equals the unpadded approximation (K = 3: two weight
    coordinates, so the stick-breaking shifts log(K - 1 - j) are not all 0)."""
    if not X64 and covariance_type != "full":
        # Each type compiles three programs here; the masking does not depend on the
        # precision, so the float32 pass checks one type (whose padded programs
        # test_posterior compiles anyway) and the float64 pass all four.
        pytest.skip("one covariance type in the float32 pass; all four with x64")
    key = jax.random.key(1)
    x2, prior2, map2 = _fit(two_clusters(6, n=(22, 18)), 2, covariance_type)
    x3, prior3, map3 = _fit(blobs(1, 50, 2, 3), 3, covariance_type)
    laplace.sample(key, x2, prior2, map2, covariance_type=covariance_type, **SETTINGS)
    with count_compilations() as compiled:
        draws, facts = laplace.sample(key, x3, prior3, map3, covariance_type=covariance_type,
                                      **SETTINGS)
    assert compiled == []

    rows, slots = laplace.padded_shape(50, 3, 2, covariance_type)
    assert (rows, slots) == (64, 16)
    centre = laplace.centre(*padding.pad_rows(x3, rows), padding.pad_prior(prior3, slots),
                            padding.pad_params(map3, slots, covariance_type), covariance_type)
    flat, cholesky, steps, want = unpadded_laplace(x3, prior3, map3, covariance_type, key,
                                                   *SETTINGS.values())
    real = np.asarray(centre.real)
    assert real.sum() == flat.shape[0] < real.size
    assert int(centre.steps) == int(steps) == facts["laplace_newton_steps"]
    np.testing.assert_allclose(np.asarray(centre.flat)[real], flat, rtol=TOL, atol=TOL)
    assert np.all(np.asarray(centre.flat)[~real] == 0)
    factor = np.asarray(centre.cholesky)
    np.testing.assert_allclose(factor[np.ix_(real, real)], cholesky, rtol=TOL, atol=TOL)
    # Block diagonal: the padded coordinates are uncoupled standard normals.
    assert np.all(factor[np.ix_(real, ~real)] == 0) and np.all(factor[np.ix_(~real, real)] == 0)
    np.testing.assert_array_equal(factor[np.ix_(~real, ~real)], np.eye((~real).sum()))
    for got, expected in zip(draws, want, strict=True):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=TOL, atol=TOL)
