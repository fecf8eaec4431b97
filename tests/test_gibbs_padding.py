"""One compiled Gibbs program serves every K, and every N of a row bucket, on small data.

:func:`bayes_gmm.gibbs.sample` pads the points to a row bucket and the components to the
slots of :mod:`bayes_gmm.padding`. Every slot and every point draws from its own
``fold_in`` key, so the padded run must equal the unpadded program's to rounding, for the
same key; and a call with another K or another N of the bucket must compile nothing.
"""

import jax
import numpy as np
import pytest
from conftest import EPS, X64, count_compilations, two_clusters

from bayes_gmm import GMMParams, GMMPrior, default_prior, e_step, gibbs, padding, program_store

# Few transitions: the tests are about shapes and random numbers, not about mixing.
SETTINGS = dict(num_samples=5, num_warmup=3, num_chains=2)
# Relative tolerance: the padded and unpadded programs add the same numbers in another
# order (sums over 160 rows or 16 slots instead of 150 or 3).
RTOL = 1e-10 if X64 else 1e3 * EPS


@pytest.fixture(scope="module")
def data():
    """150 points in 2-D (row bucket 160)."""
    return two_clusters(7, n=(80, 70))


def problem(x, k, covariance_type):
    """The default prior and a start with K equal weights, means on data points."""
    prior = GMMPrior(*(np.asarray(a, x.dtype) for a in default_prior(x, k, covariance_type)))
    d = x.shape[1]
    covariances = {"full": np.tile(np.eye(d), (k, 1, 1)), "tied": np.eye(d),
                   "diag": np.ones((k, d)), "spherical": np.ones(k)}[covariance_type]
    start = GMMParams(np.full(k, 1 / k), x[np.linspace(0, len(x) - 1, k).astype(int)],
                      covariances)
    return prior, GMMParams(*(np.asarray(a, x.dtype) for a in start))


def unpadded_program(*args):
    """``gibbs._sample_core`` compiled for the data's own shape. Without XLA's backend
    optimisations: it runs eight transitions, and that halves its compile time, the most
    of this test's; the arithmetic is the same, and the tolerance allows its rounding."""
    static = tuple(range(9, 14))
    lowered = jax.jit(gibbs._sample_core, static_argnums=static).lower(*args)
    compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
    return compiled(*(a for i, a in enumerate(args) if i not in static))


@pytest.mark.parametrize("covariance_type", [
    "full",
    # The padding does not depend on the precision: in float32 (whose tolerance needs
    # no other check) one type is enough, the one whose program the next test reuses.
    *(pytest.param(c, marks=pytest.mark.skipif(not X64, reason="float64 pass only"))
      for c in ("tied", "diag", "spherical")),
])
def test_padded_run_equals_the_unpadded_program(data, covariance_type):
    """K = 3 in 16 slots and 150 rows in 160 against the program of the data's own shape:
    the same labels (counts) and the same draws to rounding."""
    x = data
    prior, start = problem(x, 3, covariance_type)
    key = jax.random.key(2)
    padded = gibbs.sample(key, x, prior, start, covariance_type=covariance_type,
                          init_jitter=0.1, **SETTINGS)
    key_data, impl = program_store.key_data(key)
    unpadded = unpadded_program(key_data, x, np.ones(len(x), x.dtype), prior, start,
                                np.asarray(0.1, x.dtype), SETTINGS["num_samples"],
                                SETTINGS["num_warmup"], 1, covariance_type,
                                SETTINGS["num_samples"], SETTINGS["num_chains"], impl, None)
    np.testing.assert_array_equal(padded[1].counts, unpadded[1].counts)
    # The chains moved, so equal draws mean equal random numbers.
    assert np.ptp(np.asarray(unpadded[0].means[:, :, 0, 0])) > 1e-3
    for got, want in zip(jax.tree.leaves(padded), jax.tree.leaves(unpadded), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        want = np.asarray(want, np.float64)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * np.max(np.abs(want)))


def test_another_k_n_or_run_length_compiles_nothing(data):
    """After K = 2 on 150 rows (the program of the test above for "full"), K = 3, 160
    rows (the same bucket), and other numbers of draws, warmup transitions and thinning
    run on the same program."""
    x = data
    more = np.concatenate([x, x[:10] + 0.5])
    runs = [problem(x, 3, "full"), problem(more, 2, "full")]
    key = jax.random.key(3)
    gibbs.sample(key, x, *problem(x, 2, "full"), **SETTINGS)
    with count_compilations() as compiled:
        k3 = gibbs.sample(key, x, *runs[0], **SETTINGS)
        n160 = gibbs.sample(key, more, *runs[1], **SETTINGS)
        longer = gibbs.sample(key, x, *runs[0], num_samples=40, num_warmup=0, thinning=2,
                              num_chains=2)
    assert compiled == []
    assert longer[0].means.shape == (2, 40, 3, 2)
    assert np.all(np.isfinite(longer[1].log_posterior))
    assert k3[0].covariances.shape == (2, 5, 3, 2, 2) and k3[1].counts.shape == (2, 5, 3)
    np.testing.assert_array_equal(np.sum(n160[1].counts, -1), 160)


def test_long_runs_are_not_padded():
    """A sampler's padding costs time at every transition: beyond about a compilation's
    worth of extra work (Gibbs on N = 1e4, D = 5, K = 4 in 16 slots) it is not padded."""
    assert padding.padded_shape_for_passes(150, 2, 2, passes=16) == (160, 16)
    assert padding.padded_shape_for_passes(272, 2, 2, passes=4 * 1500) == (320, 16)
    assert padding.padded_shape_for_passes(10_000, 4, 5, passes=4 * 1500) == (10_000, 4)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_a_padded_slot_that_cannot_be_factorised_changes_nothing(data, covariance_type):
    """A padded slot holds a draw from the prior, which with few degrees of freedom can be
    too ill-conditioned to factorise in float32 (found in a power-scaled run: a slot with
    covariance ~1e10 and condition number > 1/eps turned every responsibility into NaN,
    and the next labels all into 0). Weight zero keeps such a slot out of the E-step."""
    prior, start = problem(data, 2, covariance_type)
    padded = padding.pad_params(start, 3, covariance_type)
    broken = {"full": np.full((2, 2), np.nan), "diag": np.array([np.nan, -1.0])}
    covariances = np.asarray(padded.covariances).copy()
    covariances[2] = broken[covariance_type]
    padded = padded._replace(covariances=covariances.astype(data.dtype))
    log_resp, log_density = e_step(data, start, covariance_type)
    padded_resp, padded_density = e_step(data, padded, covariance_type)
    assert np.all(np.isneginf(padded_resp[:, 2]))
    np.testing.assert_allclose(padded_resp[:, :2], log_resp, rtol=10 * EPS, atol=10 * EPS)
    np.testing.assert_allclose(padded_density, log_density, rtol=10 * EPS)
