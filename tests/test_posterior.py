"""The posterior samplers against closed forms and against each other.

- K = 1: NUTS's posterior moments of mu and Sigma equal the closed-form normal-inverse-
  Wishart (or inverse-gamma) posterior within Monte Carlo error, the error derived from
  each parameter's effective sample size.
- K = 2: NUTS and the conjugate Gibbs sampler, two independent algorithms on one model,
  agree on aligned posterior means and standard deviations within their joint Monte
  Carlo error.
- Laplace: within its asymptotic error of the exact posterior.
"""

import jax
import numpy as np
import pytest
from conftest import DTYPE, blobs, two_clusters

from bayes_gmm import BayesianGMM, NotFittedError, compare_map_posterior

Z = 4.5  # Monte Carlo z-score allowed in every comparison (many comparisons, fixed seeds)


def _table(gmm, tree):
    return compare_map_posterior(gmm, tree).drop(index="lp")


def _niw_posterior(x, prior, covariance_type):
    """Closed-form posterior moments for K = 1: {name: (mean, sd)} of every scalar."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    _, m0, kappa0, nu0, psi0 = (np.asarray(a, np.float64) for a in prior)
    xbar = x.mean(0)
    scatter = (x - xbar).T @ (x - xbar)
    kappa, nu = kappa0 + n, nu0 + n
    m = (kappa0 * m0 + n * xbar) / kappa
    dev = xbar - m0
    moments = {}
    if covariance_type == "full":
        psi = psi0 + scatter + kappa0 * n / kappa * np.outer(dev, dev)
        mean_sigma = psi / (nu - d - 1)
        # Var(Sigma_ij) of the inverse Wishart (Press 1982).
        diagonal = np.diag(psi)
        var_sigma = ((nu - d + 1) * psi**2 + (nu - d - 1) * np.outer(diagonal, diagonal)) / (
            (nu - d) * (nu - d - 1) ** 2 * (nu - d - 3)
        )
        mean_cov = mean_sigma / kappa  # Cov(mu) = E[Sigma] / kappa_N (mu is multivariate t)
        for i in range(d):
            moments[f"means[0, {i}]"] = (m[i], np.sqrt(mean_cov[i, i]))
            for j in range(i, d):
                moments[f"covariances[0, {i}, {j}]"] = (mean_sigma[i, j], np.sqrt(var_sigma[i, j]))
    else:  # diag: independent inverse gammas per feature
        a = (nu0 + n) / 2
        b = (psi0 + np.diag(scatter) + kappa0 * n / kappa * dev**2) / 2
        mean_var = b / (a - 1)
        sd_var = b / ((a - 1) * np.sqrt(a - 2))
        for i in range(d):
            moments[f"means[0, {i}]"] = (m[i], np.sqrt(mean_var[i] / kappa))
            moments[f"covariances[0, {i}]"] = (mean_var[i], sd_var[i])
    return moments


def _assert_moments(table, expected, label):
    for name, (mean, sd) in expected.items():
        row = table.loc[name]
        se_mean = row["sd"] / np.sqrt(row["ess_bulk"])
        assert abs(row["mean"] - mean) < Z * se_mean + 1e-6 * abs(mean), (label, name, row, mean)
        # The sd of a sample sd is about sd / sqrt(2 ESS) (normal approximation, generous Z).
        se_sd = sd / np.sqrt(2 * row["ess_bulk"])
        assert abs(row["sd"] - sd) < 1.5 * Z * se_sd, (label, name, row, sd)


@pytest.mark.float32_pass
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_nuts_k1_matches_the_closed_form_posterior(covariance_type):
    x = two_clusters(3, n=(40, 0))  # one cluster, few points: the prior still matters
    gmm = BayesianGMM(1, covariance_type=covariance_type, random_state=0,
                      mean_prior=[0.5, -0.5], mean_precision_prior=2.0).fit(x)
    tree = gmm.sample_posterior(x, method="nuts", num_chains=2, num_warmup=300,
                                num_samples=1000)
    table = _table(gmm, tree)
    assert table["ess_bulk"].min() > 300
    _assert_moments(table, _niw_posterior(x, gmm.prior_, covariance_type), "nuts")


@pytest.mark.float32_pass
def test_nuts_and_gibbs_agree():
    """Two independent samplers of one posterior: aligned means and sds agree."""
    x = blobs(2, 120, 2, 2, separation=3.0)
    gmm = BayesianGMM(2, random_state=0).fit(x)
    nuts = _table(gmm, gmm.sample_posterior(x, method="nuts", num_chains=2, num_warmup=300,
                                            num_samples=600))
    gibbs = _table(gmm, gmm.sample_posterior(x, method="gibbs", num_chains=2, num_warmup=300,
                                             num_samples=1500))
    assert nuts["r_hat"].max() < 1.05 and gibbs["r_hat"].max() < 1.05
    se = np.sqrt(nuts["sd"] ** 2 / nuts["ess_bulk"] + gibbs["sd"] ** 2 / gibbs["ess_bulk"])
    z = (nuts["mean"] - gibbs["mean"]).abs() / se
    assert z.max() < Z, z.sort_values().tail()
    ratio = nuts["sd"] / gibbs["sd"]
    # sd estimates: relative error about 1 / sqrt(2 ESS) each.
    tolerance = Z * np.sqrt(1 / (2 * nuts["ess_bulk"]) + 1 / (2 * gibbs["ess_bulk"]))
    assert ((ratio - 1).abs() < tolerance).all(), ratio


def test_laplace_is_close_to_the_exact_posterior():
    """K = 1, N = 400: the Laplace approximation is asymptotically exact; its mean is off
    by O(1/N) and its sd by a relative O(1/sqrt(N)) (allowed: 0.3 sd and 15 %)."""
    x = two_clusters(4, n=(400, 0))
    gmm = BayesianGMM(1, random_state=0).fit(x)
    tree = gmm.sample_posterior(x, method="laplace", num_chains=2, num_samples=2000)
    table = _table(gmm, tree)
    for name, (mean, sd) in _niw_posterior(x, gmm.prior_, "full").items():
        row = table.loc[name]
        assert abs(row["mean"] - mean) < 0.3 * sd + Z * row["sd"] / np.sqrt(4000), name
        assert abs(row["sd"] / sd - 1) < 0.15, (name, row["sd"], sd)
    assert tree.attrs["method"] == "laplace" and tree.attrs["laplace_newton_steps"] >= 1


# One size of short Gibbs run (and 500 x 2 data, K = 2) for the tests below that only need
# some draws: the sampler compiles once per shape and settings, so they share its program.
SHORT_GIBBS = {"method": "gibbs", "num_chains": 2, "num_warmup": 20, "num_samples": 40}


def test_draws_start_at_the_map_and_keep_their_layout(covariance_type):
    x = two_clusters(5)
    gmm = BayesianGMM(2, covariance_type=covariance_type, random_state=0).fit(x)
    tree = gmm.sample_posterior(x, **SHORT_GIBBS)
    posterior = tree["posterior"]
    assert posterior["weights"].shape == (2, 40, 2)
    assert posterior["means"].dtype == DTYPE
    np.testing.assert_allclose(tree["map"]["means"], gmm.means_)
    # The MAP is the mode: no draw has a higher log posterior.
    assert float(tree["sample_stats"]["lp"].max()) <= float(tree["map"]["lp"]) + 1e-3


# --------------------------------------------------------------------------------------
# Bad input


@pytest.fixture(scope="module")
def fitted():
    x = two_clusters(0)
    return x, BayesianGMM(2, random_state=0).fit(x)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"method": "hmc"}, ValueError, "method must be one of 'nuts', 'gibbs', 'laplace'"),
        ({"num_samples": 0}, ValueError, "num_samples must be an integer >= 1; got 0"),
        ({"num_chains": -1}, ValueError, "num_chains must be an integer >= 1"),
        ({"num_warmup": -5}, ValueError, "num_warmup must be an integer >= 0"),
        ({"num_samples": 2.5}, TypeError, "num_samples must be an integer"),
        ({"thinning": 0}, ValueError, "thinning must be an integer >= 1"),
        ({"init_jitter": -0.1}, ValueError, "init_jitter must be a finite number >= 0"),
        ({"init": "random"}, ValueError, "init must be one of 'map', 'default'"),
    ],
)
def test_bad_sampling_arguments(fitted, kwargs, error, message):
    x, gmm = fitted
    with pytest.raises(error, match=message):
        gmm.sample_posterior(x, **kwargs)


def test_sampling_before_fit_or_on_other_features(fitted):
    x, gmm = fitted
    with pytest.raises(NotFittedError, match="not fitted yet"):
        BayesianGMM(2).sample_posterior(x)
    with pytest.raises(ValueError, match="X has 3 features, but BayesianGMM is expecting 2"):
        gmm.sample_posterior(np.column_stack([x, x[:, 0]]))
    # Other data of the same size (so the short run's program serves).
    with pytest.warns(UserWarning, match="not the data this estimator was fitted on"):
        gmm.sample_posterior(two_clusters(1), **SHORT_GIBBS)


def test_same_seed_same_draws(fitted):
    x, gmm = fitted
    draws = [gmm.sample_posterior(x, **SHORT_GIBBS)["posterior"]["means"].values
             for _ in range(2)]
    np.testing.assert_array_equal(*draws)


def test_nuts_chains_start_at_the_map_or_where_asked(fitted, monkeypatch):
    """NUTS's initial state, mapped back to the constrained space: the MAP in every chain;
    near it but not at it with init_jitter; elsewhere with init='default'."""
    from numpyro.infer.util import constrain_fn

    from bayes_gmm import nuts
    from bayes_gmm.model import gmm_model

    x, gmm = fitted
    starts = []

    class RecordingNUTS(nuts.NUTS):
        def init(self, *args, **kwargs):
            state = super().init(*args, **kwargs)
            # Runs compiled; nuts.advance also calls init (to set the kernel up), so the
            # first state recorded in a run is the start.
            jax.debug.callback(lambda z: starts.append(z), state.z)
            return state

    monkeypatch.setattr(nuts, "NUTS", RecordingNUTS)
    # Programs of their own (not the stored ones another test may have compiled).
    monkeypatch.setattr(nuts, "_start", jax.jit(nuts._start_core, static_argnums=range(5, 12)))
    monkeypatch.setattr(nuts, "_advance", jax.jit(nuts._advance_core,
                                                  static_argnums=range(6, 12)))
    model_args = (jax.numpy.asarray(x), gmm.prior_, "full")
    tol = 1e-10 if DTYPE == np.float64 else 2e-5
    spread = np.ptp(x, axis=0)
    for settings, where in (({}, "map"), ({"init_jitter": 0.1}, "near"),
                            ({"init": "default"}, "elsewhere")):
        starts.clear()
        tree = gmm.sample_posterior(x, method="nuts", num_chains=2, num_warmup=5,
                                    num_samples=5, **settings)
        assert tree["posterior"]["means"].shape == (2, 5, 2, 2)
        assert tree.attrs["init"] == settings.get("init", "map")
        assert starts
        for chain in range(2):
            start = constrain_fn(gmm_model, model_args, {},
                                 jax.tree.map(lambda a, c=chain: a[c], starts[0]))
            gap = np.abs(np.asarray(start["means"]) - gmm.means_) / spread
            assert (gap.max() <= tol) == (where == "map"), (where, chain, gap)
            if where == "map":
                np.testing.assert_allclose(start["weights"], gmm.weights_, rtol=tol, atol=tol)
                np.testing.assert_allclose(start["covariances"], gmm.covariances_, rtol=tol,
                                           atol=tol)
            if where == "near":
                assert gap.max() < 0.2, gap


def test_laplace_programs_are_shape_stable():
    """Small data are padded to a row bucket (40 and 36 rows: 64), the padded rows masked
    out of the likelihood: a second call, or one on another N of the bucket, compiles no
    program. (Padded rows and component slots change nothing: test_laplace_padding.py.)"""
    from conftest import count_compilations

    from bayes_gmm import posterior

    x = two_clusters(6, n=(22, 18))
    gmm = BayesianGMM(2, random_state=0).fit(x)
    fewer = BayesianGMM(2, random_state=0).fit(x[:-4])
    settings = {"method": "laplace", "num_chains": 2, "num_samples": 20}
    key = jax.random.key(1)
    first = posterior.draw(key, x, gmm.prior_, gmm.params_, **settings)
    with count_compilations() as compiled:
        again = posterior.draw(key, x, gmm.prior_, gmm.params_, **settings)
        other = posterior.draw(key, x[:-4], fewer.prior_, fewer.params_, **settings)
    assert compiled == []
    for a, b in zip(first.draws, again.draws, strict=True):
        np.testing.assert_array_equal(a, b)
    assert other.draws.means.shape == (2, 20, 2, 2)
