"""NUTS as one compiled program (bayes_gmm.nuts): the same chains as NumPyro's MCMC, one
program per shape and settings, a clear error where a chain cannot start.

The statistical checks of the draws (closed forms, agreement with Gibbs, SBC) are in
test_posterior.py and test_validation.py.
"""

import jax
import numpy as np
import pytest
from conftest import DTYPE, X64, count_compilations, two_clusters

from bayes_gmm import default_prior, nuts
from bayes_gmm.em import GMMParams
from bayes_gmm.model import gmm_model, init_values

SETTINGS = {"num_chains": 2, "num_warmup": 30, "num_samples": 21, "thinning": 2}
SMALL = {**SETTINGS, "num_warmup": 5, "num_samples": 4, "thinning": 1}


def start_at_truth(x):
    """A start near the two clusters of two_clusters: the sampler needs no MAP here."""
    d = x.shape[1]
    return GMMParams(np.array([0.6, 0.4], DTYPE), np.array([np.zeros(d), np.full(d, 5.0)], DTYPE),
                     np.array([np.eye(d), 0.4 * np.eye(d)], DTYPE))


@pytest.fixture(scope="module")
def problem():
    x = two_clusters(3, n=(40, 30))
    return x, default_prior(x, 2, "full"), start_at_truth(x)


@pytest.mark.skipif(not X64, reason="compares trajectories: float32 rounding differences "
                    "grow along a trajectory until a tree decision flips; float64 pass")
@pytest.mark.parametrize("init_jitter", [0.0, 0.1])
def test_draws_equal_numpyro_mcmc(problem, init_jitter):
    """The same kernel, keys and starts as MCMC(chain_method="vectorized"): every tree has
    the same number of leapfrog steps, and the draws agree to rounding. Rounding grows
    along a trajectory (each draw is 30 to 40 transitions of up to 2^10 leapfrog steps
    from the start), so draws are compared at 1e-6 of their scale in float64."""
    from numpyro.infer import MCMC, NUTS, init_to_value
    from numpyro.infer.util import unconstrain_fn

    from bayes_gmm import gibbs

    x, prior, start = problem
    key = jax.random.key(4)
    draws, stats = nuts.sample(key, x, prior, start, "full", init_jitter=init_jitter,
                               **SETTINGS)

    start_key, run_key = jax.random.split(key)
    init_params = None
    if init_jitter:
        starts = jax.vmap(lambda k: gibbs.jitter_start(k, start, init_jitter, "full"))(
            jax.random.split(start_key, 2))
        init_params = jax.vmap(lambda p: unconstrain_fn(
            gmm_model, (x, prior, "full"), {}, init_values(p)))(starts)
    mcmc = MCMC(NUTS(gmm_model, init_strategy=init_to_value(values=init_values(start))),
                chain_method="vectorized", progress_bar=False, **SETTINGS)
    mcmc.run(run_key, x, prior, "full", extra_fields=nuts.STAT_FIELDS, init_params=init_params)
    reference = mcmc.get_samples(group_by_chain=True)
    extra = mcmc.get_extra_fields(group_by_chain=True)

    assert draws.weights.shape == (2, 10, 2)  # 21 // 2 draws: MCMC's thinning
    np.testing.assert_array_equal(stats["num_steps"], extra["num_steps"])
    np.testing.assert_array_equal(stats["diverging"], extra["diverging"])
    assert np.ptp(draws.means[0, :, 0, 0]) > 1e-3  # the chain moved
    for name, ours in zip(("weights", "means", "covariances"), draws, strict=True):
        theirs = np.asarray(reference[name])
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 * np.max(np.abs(theirs)))


def test_a_second_call_compiles_nothing(problem):
    """Other data of the same shape, another key, another jitter: the same program."""
    x, prior, start = problem
    nuts.sample(jax.random.key(0), x, prior, start, "full", init_jitter=0.1, **SMALL)
    other = x + np.asarray(0.01, DTYPE)
    with count_compilations() as compiled:
        draws, _ = nuts.sample(jax.random.key(1), other, prior, start, "full",
                               init_jitter=0.2, **SMALL)
    assert compiled == []
    assert draws.means.shape == (2, 4, 2, 2) and np.all(np.isfinite(draws.means))


def test_a_start_without_a_density_is_an_error(problem):
    x, prior, start = problem
    # A covariance that is not positive definite: no density there (the same program as
    # the test above, which starts from a finite point).
    broken = start._replace(covariances=-start.covariances)
    with pytest.raises(FloatingPointError, match="NUTS could not start.*init_jitter"):
        nuts.sample(jax.random.key(0), x, prior, broken, "full", init_jitter=0.1, **SMALL)
