"""The Gibbs sampler against closed forms.

- The conditional posterior given the labels is checked exactly (no Monte Carlo): the
  complete-data log posterior (SciPy densities) minus the claimed conditional density
  (SciPy again) is the same number at every theta.
- Its draws are checked against the conditional's closed-form moments, and the labels'
  counts against the responsibilities of a naive E-step.
- With K = 1 the labels carry nothing and every Gibbs draw is an exact independent draw
  from the normal-inverse-Wishart (or inverse-gamma) posterior: means and variances of
  the draws must match its closed form.
- With K = 2 on well-separated data: draws near the MAP, no label switching, and every
  recorded diagnostic belongs to the draw beside it.

Statistical checks use fixed seeds and tolerances of Z Monte Carlo standard errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from conftest import DTYPE, X64, blobs, count_compilations, two_clusters
from scipy import stats
from test_em import random_prior

from bayes_gmm import GMMParams, default_prior, log_posterior, m_step
from bayes_gmm.em import log_likelihood, statistics
from bayes_gmm.gibbs import (
    GibbsInfo,
    conditional_posterior,
    draw_parameters,
    gibbs_step,
    jitter_start,
    sample,
)

# Monte Carlo tolerance in standard errors (two-sided 7e-6 per check for a normal mean).
Z = 4.5
# Relative tolerance of a sum of N log densities computed in the precision in use.
SUM_RTOL = 1e-10 if X64 else 2e-5
# One setting shared by the K = 2 tests, so that they share one compilation per type.
K2_SETTINGS = dict(num_samples=200, num_warmup=50, num_chains=2, thinning=2)


def as_params(arrays, dtype=DTYPE):
    return GMMParams(*(jnp.asarray(a, dtype) for a in arrays))


def assert_mean(draws, expected, sd=None, z=Z):
    """|mean(draws) - expected| <= z * sd / sqrt(n) elementwise over the leading axis;
    ``sd`` is the known standard deviation of one draw, else estimated from the draws."""
    draws = np.asarray(draws, np.float64)
    n = draws.shape[0]
    sd = draws.std(0, ddof=1) if sd is None else np.asarray(sd, np.float64)
    error = np.abs(draws.mean(0) - expected) / (sd / np.sqrt(n))
    assert np.all(error <= z), f"{error.max():.2f} standard errors off:\n{error}"


def covariance_shape(covariance_type, k, d):
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
        covariance_type
    ]


# --------------------------------------------------------------------------------------
# theta | z: the formula, exactly


def conditional_log_density(theta, post, covariance_type):
    """log q(theta | z) of the claimed conditional posterior, from SciPy."""
    weights, means, covariances = (np.asarray(a, np.float64) for a in theta)
    alpha, m, kappa, nu, psi = (np.asarray(a, np.float64) for a in post)
    k, d = means.shape
    total = stats.dirichlet(alpha).logpdf(weights / weights.sum())
    if covariance_type == "full":
        for j in range(k):
            total += stats.invwishart(nu[j], psi[j]).logpdf(covariances[j])
            total += stats.multivariate_normal(m[j], covariances[j] / kappa[j]).logpdf(means[j])
    elif covariance_type == "tied":
        total += stats.invwishart(float(nu), psi).logpdf(covariances)
        for j in range(k):
            total += stats.multivariate_normal(m[j], covariances / kappa[j]).logpdf(means[j])
    elif covariance_type == "diag":
        total += stats.invgamma(nu[:, None] / 2, scale=psi / 2).logpdf(covariances).sum()
        total += stats.norm(m, np.sqrt(covariances / kappa[:, None])).logpdf(means).sum()
    else:
        total += stats.invgamma(nu / 2, scale=psi / 2).logpdf(covariances).sum()
        total += stats.norm(m, np.sqrt(covariances / kappa)[:, None]).logpdf(means).sum()
    return total


def test_conditional_is_the_complete_data_posterior(covariance_type):
    """p(x, z, theta) / q(theta | x, z) does not depend on theta: q is the conditional.
    Component 2 has no points; its conditional must be the prior."""
    rng = np.random.default_rng(1)
    k, d, n = 3, 2, 40
    x = blobs(1, n, d, 2)
    labels = rng.integers(2, size=n)
    prior = random_prior(rng, k, d, covariance_type)
    one_hot = np.eye(k, dtype=DTYPE)[labels]
    post = conditional_posterior(statistics(x, one_hot, covariance_type), prior,
                                 covariance_type)
    differences = []
    for _ in range(6):
        theta = reference.random_params(rng, k, d, covariance_type)
        complete = reference.component_log_densities(x, theta, covariance_type)
        joint = complete[np.arange(n), labels].sum() + reference.log_prior(
            theta, prior, covariance_type)
        differences.append(joint - conditional_log_density(theta, post, covariance_type))
    # A wrong exponent or scale moves the difference by O(1) between these thetas; the
    # float32 posterior parameters carry relative errors ~1e-6, times nu ~ 40 in log q.
    assert np.ptp(differences) <= (1e-8 if X64 else 1e-2), differences

    alpha, m0, kappa0, nu0, psi0 = prior
    rtol = 1e-12 if X64 else 1e-6
    np.testing.assert_allclose(post.weight_concentration[2], alpha[2], rtol=rtol)
    np.testing.assert_allclose(post.mean[2], m0, rtol=rtol)
    np.testing.assert_allclose(post.mean_precision[2], kappa0, rtol=rtol)
    if covariance_type != "tied":
        np.testing.assert_allclose(post.degrees_of_freedom[2], nu0, rtol=rtol)
        np.testing.assert_allclose(post.covariance[2], psi0, rtol=rtol)


# --------------------------------------------------------------------------------------
# theta | z and z | theta: the draws


def test_parameter_draws_have_the_conditional_moments(covariance_type):
    """Mean of each drawn weight, mean and covariance over many keys: the Dirichlet mean
    (alpha + n) / sum, m_k, and Psi_k / (nu_k - D - 1) or b / (a - 1), with their known
    standard deviations. Component 2 is empty and draws from the prior."""
    rng = np.random.default_rng(2)
    k, d, n, draws = 3, 2, 50, 4000
    x = blobs(2, n, d, 2)
    labels = rng.integers(2, size=n)
    prior = default_prior(x, k, covariance_type, weight_concentration_prior=[1.0, 2.0, 0.5],
                          mean_precision_prior=0.5, degrees_of_freedom_prior=d + 6.0)
    one_hot = np.eye(k, dtype=DTYPE)[labels]
    post = conditional_posterior(statistics(x, one_hot, covariance_type), prior,
                                 covariance_type)
    keys = jax.random.split(jax.random.key(3), draws)
    theta = jax.jit(jax.vmap(lambda key: draw_parameters(key, post, covariance_type)))(keys)
    for leaf in theta:
        assert leaf.dtype == DTYPE
    alpha, m, kappa, nu, psi = (np.asarray(a, np.float64) for a in post)

    total = alpha.sum()
    assert_mean(theta.weights, alpha / total,
                np.sqrt(alpha * (total - alpha) / (total**2 * (total + 1))))
    if covariance_type in ("full", "tied"):
        f = nu - d  # (K,) full, () tied
        f_ = f[..., None, None]
        diagonal = np.diagonal(psi, axis1=-2, axis2=-1)[..., :, None]
        variance = ((f_ + 1) * psi**2 + (f_ - 1) * diagonal * np.swapaxes(diagonal, -1, -2)) / (
            f_ * (f_ - 1) ** 2 * (f_ - 3))
        mean_cov = psi / (f_ - 1)
        mean_var = np.diagonal(mean_cov, axis1=-2, axis2=-1) / kappa[:, None]
    else:
        a, b = nu / 2, psi / 2
        if covariance_type == "diag":
            a = a[:, None]
        mean_cov = b / (a - 1)
        variance = b**2 / ((a - 1) ** 2 * (a - 2))
        mean_var = (mean_cov if covariance_type == "diag" else mean_cov[:, None]) / kappa[:, None]
    assert_mean(theta.covariances, mean_cov, np.sqrt(variance))
    # mu_k = m_k + Sigma_k^{1/2} eps / sqrt(kappa_k): mean m_k, variance E[Sigma_k] / kappa_k.
    assert_mean(theta.means, m, np.sqrt(mean_var))


def test_label_counts_follow_the_responsibilities():
    """z | theta: over many keys, n_k has mean sum_n r_nk and variance sum_n r_nk (1 - r_nk)
    (K = 2), with r from a naive SciPy E-step. The step's info belongs to its new theta."""
    covariance_type = "full"
    rng = np.random.default_rng(4)
    x = blobs(4, 60, 2, 2, separation=1.0)
    theta = reference.random_params(rng, 2, 2, covariance_type)
    prior = default_prior(x, 2, covariance_type)
    keys = jax.random.split(jax.random.key(5), 3000)
    params, info = jax.vmap(lambda key: gibbs_step(key, x, as_params(theta), prior,
                                                   covariance_type))(keys)
    resp = np.exp(reference.e_step(x, theta, covariance_type)[0])
    assert 5 < resp[:, 0].sum() < 55  # the labels are genuinely random
    assert_mean(info.counts[:, 0], resp[:, 0].sum(), np.sqrt(np.sum(resp[:, 0] * resp[:, 1])))
    np.testing.assert_array_equal(np.sum(info.counts, 1), 60)
    np.testing.assert_array_equal(info.occupied, np.sum(np.asarray(info.counts) > 0, 1))
    for i in (0, 1, 2):
        new = jax.tree.map(lambda a, i=i: a[i], params)
        np.testing.assert_allclose(info.log_posterior[i],
                                   log_posterior(x, new, prior, covariance_type),
                                   rtol=SUM_RTOL)


# --------------------------------------------------------------------------------------
# K = 1: exact draws from the normal-inverse-Wishart posterior


def niw_posterior_moments(x, prior, covariance_type):
    """Closed-form posterior moments for K = 1, in float64 from the raw data.

    Returns E[mu], Cov(mu), and the mean and variance of the covariance parameter
    (shapes (D, D), (D,), () for full/tied, diag, spherical). Tied with K = 1 is the
    same model as full (one covariance, one mean with prior N(m0, Sigma / kappa0)), so
    its posterior is the same: nu_N = nu0 + N, not the MAP's extra pseudo-count.
    """
    x = np.asarray(x, np.float64)
    _, m0, kappa0, nu0, psi0 = (np.asarray(a, np.float64) for a in prior)
    n, d = x.shape
    xbar = x.mean(0)
    scatter = (x - xbar).T @ (x - xbar)
    dev = xbar - m0
    kappa = kappa0 + n
    mean = (kappa0 * m0 + n * xbar) / kappa
    shrink = kappa0 * n / kappa
    if covariance_type in ("full", "tied"):
        nu, psi = nu0 + n, psi0 + scatter + shrink * np.outer(dev, dev)
        f = nu - d
        cov_mean = psi / (f - 1)
        diagonal = np.diag(psi)
        cov_var = ((f + 1) * psi**2 + (f - 1) * np.outer(diagonal, diagonal)) / (
            f * (f - 1) ** 2 * (f - 3))
        mean_cov = cov_mean / kappa
    elif covariance_type == "diag":
        a, b = (nu0 + n) / 2, (psi0 + np.diag(scatter) + shrink * dev**2) / 2
        cov_mean, cov_var = b / (a - 1), b**2 / ((a - 1) ** 2 * (a - 2))
        mean_cov = np.diag(cov_mean / kappa)
    else:
        a = (nu0 + n * d) / 2
        b = (psi0 + np.trace(scatter) + shrink * dev @ dev) / 2
        cov_mean, cov_var = b / (a - 1), b**2 / ((a - 1) ** 2 * (a - 2))
        mean_cov = cov_mean / kappa * np.eye(d)
    return mean, mean_cov, cov_mean, cov_var


K1_SETTINGS = dict(num_samples=1000, num_warmup=1, num_chains=4)


def k1_problem(covariance_type):
    """Data, a prior and a start for K = 1 (N = 40, D = 3)."""
    rng = np.random.default_rng(6)
    n, d = 40, 3
    x = (rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + [1.0, -2.0, 0.5]).astype(DTYPE)
    # kappa0 and nu0 large enough that the prior visibly moves the posterior.
    prior = random_prior(rng, 1, d, covariance_type)._replace(
        mean_precision=np.asarray(5.0), degrees_of_freedom=np.asarray(d + 6.0))
    covariance = np.asarray(prior.covariance)
    start = GMMParams(np.ones(1), x.mean(0, keepdims=True),
                      covariance if covariance_type == "tied" else covariance[None])
    return x, prior, as_params(start)


def test_k1_draws_match_the_closed_form_posterior(covariance_type):
    x, prior, start = k1_problem(covariance_type)
    n, d = x.shape
    draws, info = sample(jax.random.key(7), x, prior, start, covariance_type=covariance_type,
                         **K1_SETTINGS)
    mean, mean_cov, cov_mean, cov_var = niw_posterior_moments(x, prior, covariance_type)
    mu = np.asarray(draws.means, np.float64).reshape(-1, d)
    covariances = np.asarray(draws.covariances, np.float64).reshape(-1, *np.shape(cov_mean))

    np.testing.assert_array_equal(draws.weights, 1.0)
    np.testing.assert_array_equal(info.counts, n)
    assert_mean(mu, mean, np.sqrt(np.diag(mean_cov)))
    assert_mean(covariances, cov_mean, np.sqrt(cov_var))
    # Second moments about the exact means, each with its own estimated standard error.
    centred = mu - mean
    assert_mean(centred[:, :, None] * centred[:, None, :], mean_cov)
    assert_mean((covariances - cov_mean) ** 2, cov_var)


def test_warmup_and_thinning_keep_the_right_transitions():
    """Both runs make the same 1001 transitions (same keys). After the one warmup
    transition, the unthinned run keeps transitions 2, 3, ..., 1001 and thinning 2 keeps
    3, 5, ..., 1001: every second draw of the unthinned run, starting with its second."""
    x, prior, start = k1_problem("full")
    every, every_info = sample(jax.random.key(7), x, prior, start, **K1_SETTINGS)
    thinned, thinned_info = sample(jax.random.key(7), x, prior, start, num_samples=500,
                                   num_warmup=1, num_chains=4, thinning=2)
    for a, b in zip(jax.tree.leaves((thinned, thinned_info)),
                    jax.tree.leaves((every, every_info)), strict=True):
        np.testing.assert_array_equal(a, b[:, 1::2])


# --------------------------------------------------------------------------------------
# K = 2: the sampler on well-separated clusters


@pytest.fixture(scope="module")
def separated():
    """Two well-separated clusters (300 and 200 points in 2-D)."""
    return two_clusters(0)


def map_start(x, covariance_type):
    """The prior and the MAP for :func:`two_clusters` (first 300 points, then 200).

    The clusters are so far apart that every responsibility is within 2e-3 of 0 or 1:
    the M-step of the true labels agrees with fit_map to about 1e-4 (a small fraction of
    a posterior sd), without compiling fit_map for every covariance type."""
    prior = default_prior(x, 2, covariance_type)
    labels = np.repeat([0, 1], [300, 200])
    stats = statistics(x, np.eye(2, dtype=x.dtype)[labels], covariance_type)
    return prior, m_step(stats, prior, covariance_type)


def test_k2_draws_stay_near_the_map_and_pair_their_diagnostics(separated, covariance_type):
    x = separated
    prior, map_params = map_start(x, covariance_type)
    draws, info = sample(jax.random.key(8), x, prior, map_params,
                         covariance_type=covariance_type, init_jitter=0.1, **K2_SETTINGS)
    c, s = K2_SETTINGS["num_chains"], K2_SETTINGS["num_samples"]
    assert draws.weights.shape == (c, s, 2) and draws.means.shape == (c, s, 2, 2)
    assert draws.covariances.shape == (c, s) + covariance_shape(covariance_type, 2, 2)
    assert isinstance(info, GibbsInfo) and info.counts.shape == (c, s, 2)
    for leaf in jax.tree.leaves((draws, info)):
        assert np.all(np.isfinite(leaf))
    if covariance_type in ("full", "tied"):
        assert np.all(np.linalg.eigvalsh(np.asarray(draws.covariances, np.float64)) > 0)
    else:
        assert np.all(np.asarray(draws.covariances) > 0)
    np.testing.assert_array_equal(info.occupied, 2)
    np.testing.assert_array_equal(np.sum(info.counts, -1), len(x))

    # No label switching: every drawn mean is nearest to the MAP mean of its own label.
    distance = np.linalg.norm(
        np.asarray(draws.means)[:, :, :, None] - np.asarray(map_params.means)[None, None, None],
        axis=-1)
    np.testing.assert_array_equal(np.argmin(distance, -1), np.broadcast_to([0, 1], (c, s, 2)))

    # Posterior means within a few posterior standard deviations of the MAP (they differ
    # by O(1/N); the chains' Monte Carlo error is far smaller than an sd).
    for field in ("weights", "means"):
        flat = np.asarray(getattr(draws, field), np.float64).reshape(c * s, -1)
        expected = np.asarray(getattr(map_params, field), np.float64).reshape(-1)
        assert np.all(np.abs(flat.mean(0) - expected) <= 3 * flat.std(0)), field

    # Every recorded number belongs to the draw beside it.
    flat_draws = jax.tree.map(lambda a: a.reshape(c * s, *a.shape[2:]), draws)
    recomputed = jax.vmap(lambda p: (log_posterior(x, p, prior, covariance_type),
                                     log_likelihood(x, p, covariance_type)))(flat_draws)
    np.testing.assert_allclose(info.log_posterior.reshape(-1), recomputed[0], rtol=SUM_RTOL)
    np.testing.assert_allclose(info.log_likelihood.reshape(-1), recomputed[1], rtol=SUM_RTOL)
    # ... and not to its predecessor: consecutive draws differ by far more than that
    # tolerance, so an off-by-one pairing could not pass.
    step = np.median(np.abs(np.diff(np.asarray(info.log_posterior, np.float64), axis=1)))
    assert step > 10 * SUM_RTOL * np.abs(info.log_posterior).max()


def test_empty_component_draws_from_the_prior_without_nan():
    """K = 3 on two clusters, starting with a dead third component (weight zero): it
    gets no points, its weight comes back from Dirichlet(alpha), everything stays finite
    and the recorded log posterior is still that of the draw."""
    x = two_clusters(2, n=(150, 100))
    prior = default_prior(x, 3, "full", weight_concentration_prior=0.5)
    start = as_params((np.array([0.6, 0.4, 0.0]), np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 0.0]]),
                       np.stack([np.eye(2)] * 3)))
    draws, info = sample(jax.random.key(9), x, prior, start, num_samples=100, num_warmup=20,
                         num_chains=2)
    for leaf in jax.tree.leaves((draws, info)):
        assert np.all(np.isfinite(leaf))
    assert np.all(np.asarray(info.occupied) >= 2)
    assert np.any(np.asarray(info.counts)[..., 2] == 0) and np.all(draws.weights[..., 2] > 0)
    one = jax.tree.map(lambda a: a[1, -1], draws)
    np.testing.assert_allclose(info.log_posterior[1, -1], log_posterior(x, one, prior),
                               rtol=SUM_RTOL)


# --------------------------------------------------------------------------------------
# Reproducibility, dtype, compilation, starts, errors


def test_reproducible_and_compiled_once(separated):
    x = separated
    prior, start = map_start(x, "full")
    first = sample(jax.random.key(10), x, prior, start, **K2_SETTINGS)
    with count_compilations() as compiled:
        second = sample(jax.random.key(10), x, prior, start, **K2_SETTINGS)
        other = sample(jax.random.key(11), x * 2.0, default_prior(x * 2.0, 2), start,
                       init_jitter=0.3, **K2_SETTINGS)
    assert compiled == []
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(other[0].means, first[0].means)


def test_float32_in_float32_out(separated):
    """(In float32 mode this is the compilation of the K = 2 test, found in the cache.)"""
    x = separated.astype(np.float32)
    prior, start = map_start(x, "full")
    draws, info = sample(jax.random.key(0), x, prior, start, **K2_SETTINGS)
    for leaf in jax.tree.leaves(draws) + [info.log_likelihood, info.log_posterior]:
        assert leaf.dtype == jnp.float32
    assert info.counts.dtype == jnp.int32 and info.occupied.dtype == jnp.int32


def test_jitter_start(covariance_type):
    rng = np.random.default_rng(12)
    params = as_params(reference.random_params(rng, 3, 2, covariance_type))
    same = jitter_start(jax.random.key(0), params, 0.0, covariance_type)
    for a, b in zip(same, params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    moved = jitter_start(jax.random.key(0), params, 0.5, covariance_type)
    assert float(jnp.sum(moved.weights)) == pytest.approx(1.0, rel=1e-6)
    for a, b in zip(moved, params, strict=True):
        assert a.shape == b.shape and not np.allclose(a, b)
    if covariance_type in ("full", "tied"):
        assert np.all(np.linalg.eigvalsh(np.asarray(moved.covariances, np.float64)) > 0)
    else:
        assert np.all(np.asarray(moved.covariances) > 0)


def test_errors_name_the_problem(separated):
    x = separated
    prior = default_prior(x, 2)
    start = as_params((np.full(2, 0.5), np.zeros((2, 2)), np.stack([np.eye(2)] * 2)))
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        sample(jax.random.key(0), x, prior, start, covariance_type="ful")
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        sample(jax.random.key(0), x, prior, start, num_samples=0)
    with pytest.raises(ValueError, match="thinning must be an integer >= 1"):
        sample(jax.random.key(0), x, prior, start, thinning=1.5)
    with pytest.raises(ValueError, match=r"init_params do not match .* \(2, 2\)"):
        sample(jax.random.key(0), x, prior, start, covariance_type="diag")
