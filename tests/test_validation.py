"""Simulation-based calibration at smoke size, and a test of the test.

SBC (:mod:`bayes_gmm.validation`) passes a sampler when the rank of every quantity of the
true parameters among the posterior draws is uniform. At this size (100 simulations of
N = 40 points, K = 2, D = 2, L = 39 Gibbs draws each, one every 3 transitions after 50
warm-up ones from the MAP) the chi-square tests over 10 bins (4 rank values and 10
simulations expected per bin) have little power against subtle errors, but a sampler
with a wrong conditional update must fail, and the correct one must pass:

- the level: ``alpha = 0.01`` family-wise, Bonferroni over the Q = 17 quantities, so each
  quantity fails only below p = 0.01 / 17 = 5.9e-4 and an exact sampler with independent
  draws fails with probability at most 1% (thinning by 3 leaves the Gibbs draws nearly
  independent). The seed is fixed, so the outcome is deterministic; seeds 0 to 3 all
  pass, with smallest p-values between 0.0014 and 0.07;
- the power: the broken sampler below forgets the prior scale matrix Psi0 in the
  covariance update (a real slip: ``Psi_k = S_k + shrinkage``). Its covariances come out
  too small, and the covariance quantities' ranks pile up at one end, with p-values near
  1e-100 at this size: far beyond the threshold, so the verdict is not a coin flip.

NUTS (:func:`bayes_gmm.validation.nuts_sampler`, NumPyro's functional NUTS under ``vmap``)
is checked twice: against the Gibbs sampler on one simulated data set (aligned posterior
means and sds within their joint Monte Carlo error, from each parameter's ESS and, for
the sds, its kurtosis; over 12 pairs of seeds in float32 and float64 the largest z was
2.8 against the allowed 4.5), and by an SBC of its own at the size above but with 60
simulations, L = 39 draws thinned by 2 after 100 warm-up transitions, in batches of 10
compiled once (seeds 0 to 5 all pass, smallest p-values 0.04 to 0.16).
"""

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayes_gmm import em, gibbs, validation
from bayes_gmm.diagnostics import align_to_pivot
from bayes_gmm.em import GMMParams

SMOKE = {"n_samples": 40, "num_simulations": 100, "num_bins": 10, "alpha": 0.01,
         "batch_size": 100}
NUM_DRAWS, NUM_WARMUP, THINNING = 39, 50, 3


@pytest.fixture(scope="module")
def prior():
    return validation.sbc_prior(2, 2, "full")


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_prior_draws_have_the_prior_moments(covariance_type):
    """E[pi] = alpha / sum(alpha), E[mu] = m0, E[Sigma] = I for sbc_prior (by design)."""
    k, d, n = 3, 2, 4000
    prior = validation.sbc_prior(k, d, covariance_type, weight_concentration=2.0)
    draws = jax.vmap(lambda key: validation.sample_prior(key, prior, covariance_type))(
        jax.random.split(jax.random.key(0), n)
    )
    weights, means, covariances = (np.asarray(a, np.float64) for a in draws)
    np.testing.assert_allclose(weights.mean(0), 1 / k, atol=0.02)
    # sd of a mean coordinate: sqrt(E[Sigma_dd] / kappa0) ~ 3.2; Monte Carlo error ~0.05.
    np.testing.assert_allclose(means.mean(0), 0.0, atol=0.25)
    full = validation._full(covariances, covariance_type, k, d)
    # E[Sigma] = I; with nu0 = D + 4 the variance of an entry is finite, error ~0.02.
    np.testing.assert_allclose(full.mean(0), np.broadcast_to(np.eye(d), (k, d, d)),
                               atol=0.1)


def test_simulated_data_follow_the_mixture():
    params = GMMParams(jnp.array([0.3, 0.7]), jnp.array([[-5.0, 0.0], [5.0, 1.0]]),
                       jnp.array([[[1.0, 0.5], [0.5, 2.0]], [[0.5, 0.0], [0.0, 0.5]]]))
    x, labels = validation.simulate_data(jax.random.key(1), params, 20000, "full")
    labels = np.asarray(labels)
    x = np.asarray(x, np.float64)
    assert abs(labels.mean() - 0.7) < 0.02
    np.testing.assert_allclose(np.cov(x[labels == 0].T), params.covariances[0], atol=0.1)
    np.testing.assert_allclose(x[labels == 1].mean(0), params.means[1], atol=0.03)


def test_uniformity_table_accepts_uniform_and_rejects_peaked_ranks():
    rng = np.random.default_rng(0)
    uniform = pd.DataFrame({"a": rng.integers(0, 50, 1000), "b": rng.integers(0, 50, 1000)})
    table = validation.uniformity_table(uniform, num_draws=49, num_bins=10, alpha=0.01)
    assert table["passed"].all() and (table["expected"] == 100).all()
    assert table["threshold"].iloc[0] == pytest.approx(0.005)
    peaked = uniform.assign(b=np.clip(rng.normal(25, 5, 1000).round(), 0, 49).astype(int))
    table = validation.uniformity_table(peaked, num_draws=49, num_bins=10, alpha=0.01)
    assert table.loc["a", "passed"] and not table.loc["b", "passed"]


def _check(result):
    assert result.num_draws == NUM_DRAWS and result.ranks.shape == (100, 17)
    assert result.ranks.to_numpy().min() >= 0 and result.ranks.to_numpy().max() <= NUM_DRAWS


@pytest.mark.sbc
@pytest.mark.float32_pass
def test_gibbs_passes_sbc(prior, tmp_path):
    sampler = validation.gibbs_sampler(NUM_DRAWS, num_warmup=NUM_WARMUP, thinning=THINNING)
    result = validation.sbc(jax.random.key(0), prior, covariance_type="full", sampler=sampler,
                            **SMOKE)
    _check(result)
    assert result.passed, result.table
    figure = validation.plot_sbc(result, tmp_path / "sbc.png", n_band_simulations=200)
    assert len(figure.axes) >= 17 and (tmp_path / "sbc.png").stat().st_size > 0


@pytest.mark.sbc
@pytest.mark.float32_pass
def test_sbc_rejects_a_gibbs_sampler_that_forgets_the_prior_scale(prior, monkeypatch):
    """The test of the test: one deliberately wrong update, and SBC must say so."""
    correct = gibbs.conditional_posterior

    def forgets_psi0(stats, prior, covariance_type="full"):
        posterior = correct(stats, prior, covariance_type)
        psi0 = jnp.asarray(prior.covariance, posterior.mean.dtype)
        # Psi_k = S_k + shrinkage, without Psi0 (0.1% of it is kept so that an empty or
        # one-point component still has a positive definite scale: SBC must find the
        # bias, not a NaN).
        return posterior._replace(covariance=posterior.covariance - 0.999 * psi0)

    monkeypatch.setattr(gibbs, "conditional_posterior", forgets_psi0)

    def broken(key, x, prior, init_params, covariance_type):
        # gibbs.sample's own jit may hold a compiled copy of the correct sampler: trace
        # the undecorated function, so the patched update is the one that runs.
        draws, _ = gibbs._sample_core(
            key, x, jnp.ones(x.shape[0], x.dtype), gibbs._as_dtype(prior, x.dtype),
            gibbs._as_dtype(init_params, x.dtype), jnp.zeros((), x.dtype), NUM_DRAWS,
            NUM_WARMUP, THINNING, covariance_type, NUM_DRAWS, 1, None, None,
        )
        return GMMParams(*(a[0] for a in draws))

    broken.vectorized = True
    result = validation.sbc(jax.random.key(0), prior, covariance_type="full", sampler=broken,
                            **SMOKE)
    _check(result)
    assert not result.passed
    failed = result.table.index[~result.table["passed"]]
    assert any(name.startswith(("sorted_log_det", "log_variance")) for name in failed)
    assert result.table.loc[failed, "p_value"].min() < 1e-10


# --------------------------------------------------------------------------------------
# NUTS, vectorised over simulations

Z = 4.5  # Monte Carlo z-score allowed in every comparison (many comparisons, fixed seeds)


@pytest.fixture(scope="module")
def simulated():
    """One data set of the SBC model (K = 2, full, N = 60) and its MAP, as sbc() makes it."""
    prior = validation.sbc_prior(2, 2, "full")
    theta_key, data_key, map_key = jax.random.split(jax.random.key(3), 3)
    theta = validation.sample_prior(theta_key, prior, "full")
    x, _ = validation.simulate_data(data_key, theta, 60, "full")
    start, _ = em.fit_map(map_key, x, prior, covariance_type="full", n_init=2, max_iter=200)
    return x, prior, start


def _chains(sampler, seed, x, prior, start, num_chains=4):
    """num_chains chains of an SBC sampler, side by side under vmap (as sbc() runs them)."""
    keys = jax.random.split(jax.random.key(seed), num_chains)
    return jax.jit(jax.vmap(lambda key: sampler(key, x, prior, start, "full")))(keys)


def _moments(draws, pivot):
    """{parameter: (mean, sd, standard error of the mean, relative standard error of the
    sd)} of draws (chain, draw, ...) aligned to the pivot, errors from the ESS.

    The sd of a sample sd is about ``sd sqrt((kurtosis - 1) / (4 ESS))`` (``1 / sqrt(2
    ESS)`` for a normal; covariance entries have heavier tails), with the ESS of the
    squared deviations (arviz_stats' ``method="sd"``)."""
    aligned, _ = align_to_pivot(draws, pivot, "full")
    out = {}
    for field, array in zip(GMMParams._fields, aligned, strict=True):
        array = np.asarray(array, np.float64)
        for index in np.ndindex(array.shape[2:]):
            v = array[(slice(None), slice(None), *index)]
            sd = v.std(ddof=1)
            kurtosis = stats.kurtosis(v.ravel(), fisher=False)
            out[f"{field}{list(index)}"] = (
                v.mean(), sd, sd / np.sqrt(arviz_stats.ess(v, method="mean")),
                np.sqrt((kurtosis - 1) / (4 * arviz_stats.ess(v, method="sd"))),
            )
    return pd.DataFrame.from_dict(out, orient="index", columns=["mean", "sd", "se", "rse_sd"])


@pytest.mark.float32_pass
def test_vectorised_nuts_agrees_with_gibbs(simulated):
    """Two independent samplers of one posterior: aligned posterior means and sds agree
    within their joint Monte Carlo error."""
    x, prior, start = simulated
    nuts_draws = _chains(validation.nuts_sampler(300, num_warmup=200, thinning=1), 1,
                         x, prior, start)
    gibbs_draws = _chains(validation.gibbs_sampler(1000, num_warmup=200, thinning=1), 2,
                          x, prior, start)
    assert nuts_draws.means.shape == (4, 300, 2, 2) and nuts_draws.means.dtype == x.dtype
    assert np.all(np.std(np.asarray(nuts_draws.means), axis=1) > 0)  # every chain moves
    nuts, gibbs_ = _moments(nuts_draws, start), _moments(gibbs_draws, start)
    z_mean = (nuts["mean"] - gibbs_["mean"]).abs() / np.hypot(nuts["se"], gibbs_["se"])
    assert z_mean.max() < Z, z_mean.sort_values().tail()
    z_sd = (nuts["sd"] / gibbs_["sd"] - 1).abs() / np.hypot(nuts["rse_sd"], gibbs_["rse_sd"])
    assert z_sd.max() < Z, z_sd.sort_values().tail()


@pytest.mark.sbc
@pytest.mark.float32_pass
def test_nuts_passes_sbc_compiled_once(prior):
    """60 simulations in 6 batches of 10, one trace (so one compilation) for all."""
    sampler = validation.nuts_sampler(NUM_DRAWS, num_warmup=100, thinning=2)
    traces = []

    def counted(*args):
        traces.append(1)
        return sampler(*args)

    counted.vectorized, counted.batch_size = sampler.vectorized, sampler.batch_size
    result = validation.sbc(jax.random.key(0), prior, covariance_type="full",
                            sampler=counted, **{**SMOKE, "num_simulations": 60,
                                                "batch_size": None})
    assert len(traces) == 1
    assert result.num_draws == NUM_DRAWS and result.ranks.shape == (60, 17)
    assert result.passed, result.table


def test_sbc_checks_its_arguments(prior):
    with pytest.raises(ValueError, match="num_simulations must be an integer >= 2"):
        validation.sbc(jax.random.key(0), prior, num_simulations=1)
    with pytest.raises(ValueError, match="alpha must be strictly between 0 and 1"):
        validation.sbc(jax.random.key(0), prior, alpha=1.5)
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        validation.sbc(jax.random.key(0), prior, covariance_type="ful")
