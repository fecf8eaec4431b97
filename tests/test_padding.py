"""Shape-stable programs: a small problem is padded (rows and component slots) so that one
compiled EM program serves every K, and padding changes nothing but rounding."""

import jax
import numpy as np
import pytest
from conftest import X64, blobs, count_compilations

from bayes_gmm import BayesianGMM, default_prior, padding
from bayes_gmm.em import GMMParams, _fit_map, fit_map, fit_map_batch, history_length
from bayes_gmm.initialization import INIT_METHODS

# Padding changes only the order of a few additions (the sums over rows and slots), so
# in float64 the fits agree to a few ulps amplified by at most a hundred EM steps. In
# float32 that rounding is of the order of the stopping rule (relative change 1e-6 of the
# log posterior), so the two runs may stop one step apart: parameters then agree to what
# one slow EM step moves them, and the log posterior to a few times tol.
RTOL = 1e-10 if X64 else 5e-3
LP_RTOL = 1e-10 if X64 else 1e-5


def _unpadded_fit(key, x, prior, covariance_type, init, n_init):
    """The fit in the problem's own shapes: no padded rows, no padded slots."""
    return _fit_map(key, x, np.ones(len(x), x.dtype), prior, None, 1e-6, np.int32(100),
                    covariance_type, init, n_init, history_length(100), False, None, None)


def _one_type_in_float32(covariance_type):
    """The masking does not depend on the precision, and each case compiles a padded and
    an unpadded program: the float32 pass checks one covariance type (to its looser
    tolerance), the float64 pass all four (to 1e-10)."""
    if not X64 and covariance_type != "full":
        pytest.skip("one covariance type in the float32 pass; all four with x64")


def _assert_same_fit(padded, unpadded):
    (p1, i1), (p2, i2) = padded, unpadded
    scale = max(1.0, float(np.max(np.abs(np.asarray(p2.means)))))
    for a, b in zip(p1, p2, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=RTOL * scale)
    np.testing.assert_allclose(float(i1.log_posterior), float(i2.log_posterior),
                               rtol=LP_RTOL)
    if X64:
        assert int(i1.n_iter) == int(i2.n_iter)
    np.testing.assert_array_equal(np.asarray(i1.dead), np.asarray(i2.dead))


def test_padded_shape_buckets_small_problems_only():
    assert padding.padded_shape(272, 2, 2) == (320, 16)
    assert padding.padded_shape(82, 9, 1) == (96, 16)
    assert [padding.row_bucket(n) for n in (1, 64, 65, 129, 256, 257)] == [
        64, 64, 80, 160, 256, 320]
    assert padding.padded_shape(64, 17, 1) == (64, 32)
    # Large problems keep their own shapes: padding would cost real time there.
    assert padding.padded_shape(1_000_000, 10, 10) == (1_000_000, 10)


@pytest.mark.parametrize("init", INIT_METHODS)
@pytest.mark.parametrize("k", [1, 3])
def test_padded_fit_equals_unpadded_fit(covariance_type, init, k):
    _one_type_in_float32(covariance_type)
    x = blobs(3, 150, 2, 3, separation=3.0)
    prior = default_prior(x, k, covariance_type)
    key = jax.random.key(7)
    padded = fit_map(key, x, prior, covariance_type=covariance_type, init=init, n_init=2)
    assert padding.padded_shape(len(x), k, 2) != (len(x), k)  # it was padded
    _assert_same_fit(padded, _unpadded_fit(key, x, prior, covariance_type, init, 2))


def test_padded_fit_with_given_start_and_history_equals_unpadded(covariance_type):
    _one_type_in_float32(covariance_type)
    x = blobs(4, 120, 2, 2)
    prior = default_prior(x, 2, covariance_type)
    start, _ = fit_map(jax.random.key(0), x, prior, covariance_type=covariance_type,
                       max_iter=0)
    params, info = fit_map(jax.random.key(0), x, prior, start,
                           covariance_type=covariance_type, keep_history=True)
    reference = _fit_map(jax.random.key(0), x, np.ones(len(x), x.dtype), prior, start, 1e-6,
                         np.int32(100), covariance_type, "k-means++", 1,
                         history_length(100, True), True, None, None)
    _assert_same_fit((params, info), reference)
    n = int(info.n_iter) + 1
    for a, b in zip(info.params_history, reference[1].params_history, strict=True):
        b = np.asarray(b)[:101]  # the program's buffer is longer; fit_map cuts it at max_iter + 1
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a)[:n], np.asarray(b)[:n], rtol=RTOL,
                                   atol=RTOL * 10)


def test_padded_slots_are_never_alive():
    x = blobs(5, 200, 2, 2)
    prior = default_prior(x, 2)
    padded = padding.pad_prior(prior, 16)
    params, info = _fit_map(jax.random.key(0), *padding.pad_rows(x, 256), padded, None,
                            1e-6, np.int32(100), "full", "k-means++", 1, history_length(100),
                            False, None, None)
    weights = np.asarray(params.weights)
    assert np.all(weights[2:] == 0) and np.all(weights[:2] > 0)
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=RTOL)
    assert np.all(np.isfinite(np.asarray(params.covariances)))


def test_batch_equals_one_fit_per_prior(covariance_type):
    _one_type_in_float32(covariance_type)
    x = blobs(6, 160, 2, 3)
    priors = [default_prior(x, k, covariance_type) for k in (1, 2, 4)]
    keys = jax.random.split(jax.random.key(3), len(priors))
    batch = fit_map_batch(keys, x, priors, covariance_type=covariance_type, n_init=2)
    for key, prior, fit in zip(keys, priors, batch, strict=True):
        k = prior.weight_concentration.shape[0]
        assert fit[0].means.shape == (k, 2) and fit[1].dead.shape == (k,)
        _assert_same_fit(fit, fit_map(key, x, prior, covariance_type=covariance_type,
                                      n_init=2))


def test_batch_of_a_grid_compiles_once():
    x = blobs(7, 110, 2, 3)
    priors = [default_prior(x, k) for k in range(1, 5)]
    keys = jax.random.split(jax.random.key(0), 4)
    fit_map_batch(keys, x, priors)
    other = [default_prior(x[:105], k) for k in (2, 3, 5, 6)]
    with count_compilations() as compiled:
        fit_map_batch(keys, x[:105], other)  # same row bucket, other Ks: same program
    assert compiled == []


def test_estimator_with_another_k_compiles_nothing():
    x = blobs(8, 200, 2, 3)
    BayesianGMM(n_components=2, random_state=0).fit(x)
    with count_compilations() as compiled:
        gmm = BayesianGMM(n_components=3, random_state=0).fit(x)
    assert compiled == []
    assert gmm.means_.shape == (3, 2) and gmm.converged_


def test_traced_fit_is_padded_the_same_way():
    """Under the user's jit the padding is traced too, and gives the same fit."""
    x = blobs(9, 100, 2, 2)
    prior = default_prior(x, 2)
    key = jax.random.key(1)
    params, info = jax.jit(lambda key: fit_map(key, x, prior))(key)
    _assert_same_fit((params, info), fit_map(key, x, prior))
    assert isinstance(params, GMMParams) and params.weights.shape == (2,)
