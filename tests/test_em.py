"""The EM core against independent references: SciPy densities, a naive NumPy E-step,
automatic differentiation (the MAP is a stationary point), the closed-form K = 1 mode and
scikit-learn's maximum-likelihood EM under a vanishing prior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from conftest import COVARIANCE_TYPES, DTYPE, EPS, X64, blobs, count_compilations, two_clusters

from bayes_gmm import GMMParams, GMMPrior, default_prior, e_step, fit_map, log_posterior, m_step
from bayes_gmm.em import log_prior, statistics

# Relative tolerance of a sum of N log densities computed in the precision in use.
SUM_RTOL = 1e-10 if X64 else 2e-5


def as_params(arrays):
    return GMMParams(*(jnp.asarray(a, DTYPE) for a in arrays))


def random_prior(rng, k, d, covariance_type):
    """A non-default prior, so that no hyperparameter can hide behind its default."""
    scale = {"full": None, "tied": None, "diag": rng.uniform(0.5, 2, d),
             "spherical": rng.uniform(0.5, 2)}[covariance_type]
    if scale is None:
        a = rng.normal(size=(d, d))
        scale = a @ a.T + np.eye(d)
    return default_prior(
        np.zeros((2, d)), k, covariance_type,
        weight_concentration_prior=rng.uniform(1.2, 3.0, k),
        mean_prior=rng.normal(size=d),
        mean_precision_prior=rng.uniform(0.1, 2.0),
        degrees_of_freedom_prior=d + rng.uniform(0.5, 4.0),
        covariance_prior=scale,
    )


# --------------------------------------------------------------------------------------
# Densities


@pytest.mark.parametrize("seed", [0, 1])
def test_log_prior_matches_scipy(covariance_type, seed):
    rng = np.random.default_rng(seed)
    k, d = 3, 3
    prior = random_prior(rng, k, d, covariance_type)
    params = reference.random_params(rng, k, d, covariance_type)
    expected = reference.log_prior(params, prior, covariance_type)
    got = log_prior(as_params(params), GMMPrior(*(jnp.asarray(a, DTYPE) for a in prior)),
                    covariance_type)
    np.testing.assert_allclose(float(got), expected, rtol=1e-11 if X64 else 1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_log_posterior_matches_scipy(covariance_type, seed):
    rng = np.random.default_rng(seed)
    k, d = 3, 2
    x = blobs(seed, 200, d, k)
    prior = random_prior(rng, k, d, covariance_type)
    params = reference.random_params(rng, k, d, covariance_type)
    expected = reference.log_posterior(x, params, prior, covariance_type)
    got = log_posterior(x, as_params(params), prior, covariance_type)
    np.testing.assert_allclose(float(got), expected, rtol=SUM_RTOL)


@pytest.mark.parametrize("shape", [(50, 1, 1), (200, 3, 4), (1000, 5, 3)])
def test_e_step_matches_naive_numpy(covariance_type, shape):
    n, d, k = shape
    rng = np.random.default_rng(n + d + k)
    x = blobs(1, n, d, k)
    params = reference.random_params(rng, k, d, covariance_type)
    expected_resp, expected_density = reference.e_step(x, params, covariance_type)
    # A chunk size that does not divide N exercises the padding of the last chunk.
    log_resp, log_density = e_step(x, as_params(params), covariance_type, chunk_size=37)
    assert log_resp.shape == (n, k) and log_resp.dtype == DTYPE
    atol = 1e-9 if X64 else 2e-3
    np.testing.assert_allclose(np.exp(log_resp), np.exp(expected_resp), atol=atol)
    np.testing.assert_allclose(log_density, expected_density, rtol=1e-10 if X64 else 1e-5,
                               atol=1e-10 if X64 else 1e-4)


def test_statistics_match_naive_numpy(covariance_type):
    rng = np.random.default_rng(3)
    n, d, k = 300, 3, 4
    x = blobs(3, n, d, k) + 100.0  # an offset that uncentred sums would pay for in float32
    resp = rng.dirichlet(np.ones(k), size=n)
    stats = statistics(x, resp.astype(DTYPE), covariance_type, chunk_size=64)
    x64, counts = x.astype(np.float64), resp.sum(0)
    means = resp.T @ x64 / counts[:, None]
    scatter = np.stack(
        [(resp[:, j, None] * (x64 - means[j])).T @ (x64 - means[j]) for j in range(k)]
    )
    if covariance_type in ("diag", "spherical"):
        scatter = np.diagonal(scatter, axis1=1, axis2=2)
    rtol = 1e-10 if X64 else 1e-4
    np.testing.assert_allclose(stats.counts, counts, rtol=rtol)
    np.testing.assert_allclose(stats.means, means, rtol=rtol)
    np.testing.assert_allclose(stats.scatter, scatter, rtol=rtol, atol=rtol * np.abs(scatter).max())


# --------------------------------------------------------------------------------------
# EM never lowers the log posterior, and stops at a stationary point


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(150, 1, 2), (300, 2, 3), (400, 4, 4)])
def test_em_never_decreases_log_posterior(covariance_type, seed, shape):
    n, d, k = shape
    x = blobs(seed, n, d, k, separation=2.5)
    prior = default_prior(x, k, covariance_type)
    # Random soft responsibilities start EM near a saddle point. In float32 a few starts
    # (about 1 in 10 for 1-D tied data, at any seed) change the log posterior by less than
    # its rounding in the first step, and EM stops there, a numerical fixed point; the
    # keys here give starts that are not such a point, so the climb can be checked.
    _, info = fit_map(jax.random.key(seed + 10), x, prior, covariance_type=covariance_type,
                      init="random", max_iter=60, tol=0.0)
    history = np.asarray(info.history[: int(info.n_iter) + 1], dtype=np.float64)
    assert np.all(np.isfinite(history))
    # Each value is a sum of N terms with relative rounding EPS each.
    allowed = 20 * EPS * n * max(1.0, np.abs(history).max() / n)
    assert np.diff(history).min() >= -allowed
    assert history[-1] > history[0]


def _unconstrained(params, covariance_type):
    """theta -> R^p: log weights, means, Cholesky factors with log diagonals, log variances."""
    weights, means, covariances = params
    if covariance_type in ("full", "tied"):
        chol = jnp.linalg.cholesky(covariances)
        diag = jnp.diagonal(chol, axis1=-2, axis2=-1)
        raw = jnp.tril(chol, -1) + jnp.vectorize(jnp.diag, signature="(d)->(d,d)")(jnp.log(diag))
    else:
        raw = jnp.log(covariances)
    return jnp.log(weights), means, raw


def _constrained(u, covariance_type):
    logits, means, raw = u
    if covariance_type in ("full", "tied"):
        diag = jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))
        chol = jnp.tril(raw, -1) + jnp.vectorize(jnp.diag, signature="(d)->(d,d)")(diag)
        covariances = chol @ jnp.swapaxes(chol, -1, -2)
    else:
        covariances = jnp.exp(raw)
    return GMMParams(jax.nn.softmax(logits), means, covariances)


def _gradient_norm(x, u, prior, covariance_type):
    grad = jax.grad(lambda v: log_posterior(x, _constrained(v, covariance_type), prior,
                                            covariance_type))(u)
    return float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grad))))


@pytest.mark.parametrize("k", [1, 3])
def test_map_is_a_stationary_point(covariance_type, k):
    """The gradient of the log posterior in an unconstrained parametrisation vanishes at
    the MAP: an autodiff check of every M-step formula (none of them is used here)."""
    x = blobs(4, 400, 3, k, separation=3.0)
    prior = default_prior(x, k, covariance_type, weight_concentration_prior=2.0)
    params, info = fit_map(jax.random.key(0), x, prior, covariance_type=covariance_type,
                           max_iter=2000, tol=1e-15 if X64 else 1e-7)
    u = _unconstrained(params, covariance_type)
    at_map = _gradient_norm(x, u, prior, covariance_type)
    # The same norm a small step away sets the scale that "zero" is measured against.
    direction = jax.tree.map(lambda a: 1e-2 * jnp.ones_like(a), u)
    nearby = _gradient_norm(x, jax.tree.map(jnp.add, u, direction), prior, covariance_type)
    assert at_map <= (1e-5 if X64 else 5e-2) * nearby


def test_k1_map_is_the_closed_form_niw_mode(covariance_type):
    x = two_clusters(5).astype(np.float64)
    n, d = x.shape
    prior = default_prior(x, 1, covariance_type, mean_prior=np.ones(d), mean_precision_prior=3.0)
    params, info = fit_map(jax.random.key(0), x.astype(DTYPE), prior,
                           covariance_type=covariance_type)
    _, m0, kappa0, nu0, psi0 = (np.asarray(a, np.float64) for a in prior)
    xbar = x.mean(0)
    scatter = (x - xbar).T @ (x - xbar)
    dev = np.outer(xbar - m0, xbar - m0)
    psi = scatter + kappa0 * n / (kappa0 + n) * dev
    expected_mean = (kappa0 * m0 + n * xbar) / (kappa0 + n)
    expected = {
        "full": (psi0 + psi) / (nu0 + n + d + 2),
        "tied": (psi0 + psi) / (nu0 + n + 1 + d + 1),
        "diag": (psi0 + np.diag(psi)) / (nu0 + n + 3),
        "spherical": (psi0 + np.trace(psi)) / (nu0 + d * (n + 1) + 2),
    }[covariance_type]
    rtol = 1e-12 if X64 else 2e-5
    np.testing.assert_allclose(params.weights, [1.0], rtol=rtol)
    np.testing.assert_allclose(params.means[0], expected_mean, rtol=rtol, atol=rtol)
    covariance = params.covariances if covariance_type == "tied" else params.covariances[0]
    np.testing.assert_allclose(covariance, expected, rtol=rtol)
    assert bool(info.converged) and int(info.n_iter) <= 2


# --------------------------------------------------------------------------------------
# Agreement with scikit-learn under a vanishing prior


def _precisions(covariances, covariance_type):
    if covariance_type in ("full", "tied"):
        return np.linalg.inv(covariances)
    return 1.0 / covariances


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_vanishing_prior_matches_sklearn(covariance_type):
    """With kappa0 -> 0, alpha = 1, Psi0 -> 0 and nu0 at D - 1, the MAP differs from the
    maximum-likelihood estimate only by the 2D + 1 pseudo-observations that the inverse
    Wishart's |Sigma| exponent keeps: relative O((2D + 1) / N_k) in the covariances, and
    far less in the means and weights of well-separated clusters."""
    sklearn_mixture = pytest.importorskip("sklearn.mixture")
    k, d = 3, 2
    rng = np.random.default_rng(7)
    centres = np.array([[0.0, 0.0], [9.0, 0.0], [0.0, 9.0]])
    labels = rng.integers(k, size=30000)
    x = centres[labels] + rng.normal(size=(30000, d)) * [1.0, 0.7]
    weights0 = np.full(k, 1.0 / k)
    means0 = centres + rng.normal(scale=0.5, size=(k, d))  # one start in each cluster
    covariances0 = {"full": np.stack([np.cov(x.T)] * k), "tied": np.cov(x.T),
                    "diag": np.tile(x.var(0), (k, 1)), "spherical": np.full(k, x.var())}
    covariances0 = covariances0[covariance_type]
    sk = sklearn_mixture.GaussianMixture(
        k, covariance_type=covariance_type, reg_covar=0.0, tol=1e-10, max_iter=500,
        weights_init=weights0, means_init=means0,
        precisions_init=_precisions(covariances0, covariance_type),
    ).fit(x)
    vanishing = {"full": 1e-12 * np.eye(d), "tied": 1e-12 * np.eye(d),
                 "diag": np.full(d, 1e-12), "spherical": 1e-12}[covariance_type]
    prior = default_prior(x, k, covariance_type, mean_precision_prior=1e-12,
                          degrees_of_freedom_prior=d - 1 + 1e-6, covariance_prior=vanishing)
    params, info = fit_map(
        jax.random.key(0), x.astype(DTYPE), prior,
        GMMParams(weights0, means0, covariances0),
        covariance_type=covariance_type, max_iter=500, tol=1e-12 if X64 else 1e-7,
    )
    assert bool(info.converged)
    pull = (2 * d + 1) / (len(x) * sk.weights_.min())
    precision = 0.0 if X64 else 1e-4
    np.testing.assert_allclose(params.weights, sk.weights_, rtol=pull + precision)
    np.testing.assert_allclose(params.means, sk.means_, atol=pull * x.std() + precision)
    _, log_density = e_step(x.astype(DTYPE), params, covariance_type)
    # A relative change eps of Sigma moves log N by eps (D + m^2) / 2 at squared Mahalanobis
    # distance m^2 <= 2 |log p|: a tolerance of pull * D absolute plus 2 * pull relative.
    np.testing.assert_allclose(log_density, sk.score_samples(x), atol=pull * d + precision,
                               rtol=2 * pull + precision)


def test_e_step_matches_sklearn_score_samples(covariance_type):
    sklearn_mixture = pytest.importorskip("sklearn.mixture")
    x = blobs(8, 500, 3, 3).astype(np.float64)
    sk = sklearn_mixture.GaussianMixture(3, covariance_type=covariance_type,
                                         random_state=0).fit(x)
    params = as_params((sk.weights_, sk.means_, sk.covariances_))
    log_resp, log_density = e_step(x.astype(DTYPE), params, covariance_type)
    np.testing.assert_allclose(log_density, sk.score_samples(x), rtol=1e-10 if X64 else 1e-5)
    np.testing.assert_allclose(np.exp(log_resp), sk.predict_proba(x), atol=1e-9 if X64 else 1e-4)


# --------------------------------------------------------------------------------------
# dtype, reproducibility, invariances, compilation


def test_float32_in_float32_out(covariance_type):
    x = two_clusters(0).astype(np.float32)
    params, info = fit_map(jax.random.key(0), x, default_prior(x, 2, covariance_type),
                           covariance_type=covariance_type)
    for leaf in jax.tree.leaves((params, info.log_posterior, info.history)):
        assert leaf.dtype == jnp.float32


def test_same_seed_gives_identical_results(covariance_type):
    # 150 points, two restarts: the programs of tests/test_padding.py (same row bucket).
    x = blobs(2, 150, 2, 3, separation=2.0)
    prior = default_prior(x, 3, covariance_type)
    first = fit_map(jax.random.key(11), x, prior, covariance_type=covariance_type, n_init=2)
    second = fit_map(jax.random.key(11), x, prior, covariance_type=covariance_type, n_init=2)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        np.testing.assert_array_equal(a, b)


def test_invariant_to_row_order(covariance_type):
    x = blobs(3, 500, 3, 3)
    prior = default_prior(x, 3, covariance_type)
    start, _ = fit_map(jax.random.key(0), x, prior, covariance_type=covariance_type, max_iter=0)
    order = np.random.default_rng(0).permutation(len(x))
    fits = [fit_map(jax.random.key(0), rows, prior, start, covariance_type=covariance_type)
            for rows in (x, x[order])]
    rtol = 1e-9 if X64 else 1e-4
    for a, b in zip(jax.tree.leaves(fits[0][0]), jax.tree.leaves(fits[1][0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


def test_relabelling_the_start_relabels_the_map(covariance_type):
    x = blobs(5, 500, 2, 3)  # the row bucket of two_clusters: its programs serve
    prior = default_prior(x, 3, covariance_type)
    start, _ = fit_map(jax.random.key(0), x, prior, covariance_type=covariance_type, max_iter=0)
    perm = np.array([2, 0, 1])
    relabelled = GMMParams(start.weights[perm], start.means[perm],
                           start.covariances if covariance_type == "tied"
                           else start.covariances[perm])
    fit, _ = fit_map(jax.random.key(0), x, prior, start, covariance_type=covariance_type)
    fit_perm, _ = fit_map(jax.random.key(0), x, prior, relabelled,
                          covariance_type=covariance_type)
    rtol = 1e-9 if X64 else 1e-4
    np.testing.assert_allclose(fit_perm.means, fit.means[perm], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(fit_perm.weights, fit.weights[perm], rtol=rtol, atol=rtol)


def test_second_call_with_same_shapes_does_not_retrace():
    x = blobs(0, 500, 2, 2)
    prior = default_prior(x, 2)
    fit_map(jax.random.key(0), x, prior, tol=1e-5)
    with count_compilations() as compiled:
        fit_map(jax.random.key(1), x + 1.0, default_prior(x + 1.0, 2), tol=1e-3)
        fit_map(jax.random.key(2), x * 2.0, default_prior(x * 2.0, 2))
        # max_iter is an argument of the program, not part of its shape (up to 1023).
        _, info = fit_map(jax.random.key(3), x, prior, max_iter=3, tol=0.0)
        _, longer = fit_map(jax.random.key(3), x, prior, max_iter=1000, tol=0.0)
    assert compiled == []
    assert info.history.shape == (4,) and int(info.n_iter) == 3
    assert longer.history.shape == (1001,) and int(longer.n_iter) > 3
    np.testing.assert_array_equal(info.history, longer.history[:4])


def test_usable_under_jit_and_vmap():
    x = blobs(1, 500, 2, 2)
    prior = default_prior(x, 2)

    @jax.jit
    def best_weights(keys):
        params, info = jax.vmap(lambda key: fit_map(key, x, prior))(keys)
        return params.weights, info.log_posterior

    weights, lp = best_weights(jax.random.split(jax.random.key(0), 4))
    assert weights.shape == (4, 2) and lp.shape == (4,)
    single, info = fit_map(jax.random.split(jax.random.key(0), 4)[2], x, prior)
    np.testing.assert_allclose(lp[2], info.log_posterior, rtol=SUM_RTOL)
    # vmap over priors: a sweep of the mean precision.
    kappas = jnp.asarray([0.01, 1.0, 100.0], DTYPE)
    priors = jax.vmap(lambda kappa: prior._replace(mean_precision=kappa))(kappas)
    swept, _ = jax.vmap(lambda p: fit_map(jax.random.key(0), x, p))(priors)
    assert swept.means.shape == (3, 2, 2) and np.all(np.isfinite(swept.means))


def test_n_init_keeps_the_best_restart():
    x = blobs(6, 600, 2, 4, separation=2.0)
    prior = default_prior(x, 4)
    params, info = fit_map(jax.random.key(3), x, prior, init="random", n_init=5)
    assert info.init_log_posteriors.shape == (5,)
    assert float(info.log_posterior) == pytest.approx(float(jnp.max(info.init_log_posteriors)))


@pytest.mark.parametrize("init", ["k-means++", "random", "random_from_data"])
def test_every_init_method_reaches_the_same_map(init):
    """On well-separated clusters every start leads to one MAP (up to the labels), and
    the starts themselves differ by method (max_iter=0 returns the start)."""
    # 500 points (two_clusters' row bucket: its max_iter=0 programs serve), and the
    # reference with the settings of the fits below (one program for it and k-means++).
    x = blobs(2, 500, 2, 3, separation=6.0)
    prior = default_prior(x, 3)
    reference, _ = fit_map(jax.random.key(0), x, prior, init="k-means++", n_init=3,
                           max_iter=500)
    start, _ = fit_map(jax.random.key(1), x, prior, init=init, max_iter=0)
    params, info = fit_map(jax.random.key(1), x, prior, init=init, n_init=3, max_iter=500)
    assert bool(info.converged)
    order = np.argsort(np.asarray(params.means[:, 0]))
    ref_order = np.argsort(np.asarray(reference.means[:, 0]))
    tol = 1e-4 if DTYPE == np.float32 else 1e-8
    np.testing.assert_allclose(params.means[order], reference.means[ref_order], rtol=tol,
                               atol=tol)
    np.testing.assert_allclose(params.weights[order], reference.weights[ref_order],
                               rtol=tol, atol=tol)
    if init == "random":
        # Random soft assignments: every starting mean lies near the data mean.
        spread = np.ptp(np.asarray(start.means), axis=0)
        assert np.all(spread < 0.25 * np.ptp(x, axis=0))
    else:
        # Hard assignments to K centres: the starting means are spread over the data.
        assert np.ptp(np.asarray(start.means)[:, 0]) > 0.25 * np.ptp(x[:, 0])


def test_history_buffers():
    x = two_clusters(1)
    params, info = fit_map(jax.random.key(0), x, default_prior(x, 2), init="random",
                           keep_history=True, max_iter=30)
    n = int(info.n_iter)
    assert info.history.shape == (31,) and info.params_history.means.shape == (31, 2, 2)
    assert np.all(np.isfinite(info.history[: n + 1])) and np.all(np.isnan(info.history[n + 1:]))
    np.testing.assert_allclose(info.params_history.means[n], params.means, rtol=1e-6)
    assert float(info.history[n]) == pytest.approx(float(info.log_posterior), rel=1e-6)
    # The buffers are a power of two (64 here): another max_iter within it is the same
    # program, and its first steps are the same steps.
    with count_compilations() as compiled:
        _, short = fit_map(jax.random.key(0), x, default_prior(x, 2), init="random",
                           keep_history=True, max_iter=5, tol=0.0)
    assert compiled == []
    assert short.history.shape == (6,) and short.params_history.means.shape == (6, 2, 2)
    m = min(n, 5) + 1
    np.testing.assert_array_equal(short.params_history.means[:m], info.params_history.means[:m])


# --------------------------------------------------------------------------------------
# Dead components and degenerate data


def test_component_left_without_data_dies_cleanly(covariance_type):
    """With alpha < 1 a component whose expected count falls below 1 - alpha gets weight
    exactly zero: reported in `dead`, no NaN anywhere, the others still sum to one."""
    x = two_clusters(2)
    k = 3
    prior = default_prior(x, k, covariance_type, weight_concentration_prior=0.5)
    start, _ = fit_map(jax.random.key(0), x, prior, covariance_type=covariance_type,
                       max_iter=0)
    far = start._replace(means=start.means.at[2].set(jnp.asarray([500.0, -500.0], DTYPE)))
    params, info = fit_map(jax.random.key(1), x, prior, far, covariance_type=covariance_type)
    for leaf in jax.tree.leaves((params, info.log_posterior, info.log_likelihood)):
        assert np.all(np.isfinite(leaf))
    np.testing.assert_array_equal(info.dead, [False, False, True])
    assert float(params.weights[2]) == 0.0
    assert float(jnp.sum(params.weights)) == pytest.approx(1.0, rel=1e-5)
    assert bool(info.converged)
    # The reported objective is the log posterior of the two live components.
    live = GMMParams(params.weights[:2], params.means[:2],
                     params.covariances if covariance_type == "tied" else params.covariances[:2])
    two = default_prior(x, 2, covariance_type, weight_concentration_prior=0.5,
                        covariance_prior=prior.covariance)
    np.testing.assert_allclose(info.log_posterior, log_posterior(x, live, two, covariance_type),
                               rtol=SUM_RTOL)


@pytest.mark.parametrize(
    "case", ["constant_column", "duplicated_points", "more_features_than_points"]
)
def test_singular_empirical_covariance_still_fits(covariance_type, case):
    rng = np.random.default_rng(0)
    if case == "constant_column":
        x = two_clusters(0, d=3)
        x[:, 1] = 7.0
    elif case == "duplicated_points":
        # 480 rows: the row bucket of two_clusters, whose programs serve.
        x = np.repeat(two_clusters(0, n=(3, 3)), 80, axis=0)
    else:
        x = rng.normal(size=(8, 20))
    x = x.astype(DTYPE)
    prior = default_prior(x, 2, covariance_type)
    params, info = fit_map(jax.random.key(0), x, prior, covariance_type=covariance_type)
    for leaf in jax.tree.leaves((params, info.log_posterior)):
        assert np.all(np.isfinite(leaf))
    if covariance_type in ("full", "tied"):
        assert np.all(np.linalg.eigvalsh(np.asarray(params.covariances, np.float64)) > 0)
    else:
        assert np.all(np.asarray(params.covariances) > 0)


def test_m_step_weights_formula():
    """(N_k + alpha_k - 1) / (N + sum(alpha) - K), and clipping below one."""
    x = two_clusters(0)
    stats = statistics(x, np.tile([[0.7, 0.3]], (len(x), 1)).astype(DTYPE))
    prior = default_prior(x, 2, weight_concentration_prior=[3.0, 2.0])
    n = len(x)
    expected = (np.array([0.7 * n, 0.3 * n]) + [2.0, 1.0]) / (n + 5.0 - 2)
    np.testing.assert_allclose(m_step(stats, prior).weights, expected, rtol=1e-6)
    tiny = stats._replace(counts=jnp.asarray([n - 0.2, 0.2], DTYPE))
    sparse = default_prior(x, 2, weight_concentration_prior=0.5)
    np.testing.assert_allclose(m_step(tiny, sparse).weights, [1.0, 0.0])


def test_one_float32_step_keeps_its_digits_far_from_the_origin():
    """Clusters 1000 sd apart, one of them stretched 1000:1 (condition number 1e6): one
    EM step in the precision in use against a float64 NumPy/SciPy step from the same
    start. Statistics are taken about the current means in whitened units, so float32
    keeps about as many digits as the data themselves have."""
    rng = np.random.default_rng(11)
    centres = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, -1000.0]])
    shapes = [np.eye(2), np.diag([1.0, 1e-3]) @ [[1, 1], [-1, 1]], np.diag([2.0, 0.5])]
    x = np.concatenate([c + rng.normal(size=(400, 2)) @ s for c, s in zip(centres, shapes,
                                                                           strict=True)])
    x32 = x.astype(DTYPE)
    prior = default_prior(x32, 3)
    start = GMMParams(np.full(3, 1 / 3), centres + 0.3,
                      np.stack([s.T @ s * 1.2 + 1e-4 * np.eye(2) for s in shapes]))
    params, _ = fit_map(jax.random.key(0), x32, prior, start, max_iter=1, tol=0.0)

    # The same step in float64 by NumPy/SciPy.
    xs = x32.astype(np.float64)
    resp = np.exp(reference.e_step(xs, start, "full")[0])
    alpha, m0, kappa0, nu0, psi0 = (np.asarray(a, np.float64) for a in prior)
    counts = resp.sum(0)
    means = resp.T @ xs / counts[:, None]
    for k in range(3):
        dev = xs - means[k]
        scatter = (resp[:, k, None] * dev).T @ dev
        shift = means[k] - m0
        psi = psi0 + scatter + kappa0 * counts[k] / (kappa0 + counts[k]) * np.outer(shift, shift)
        expected = psi / (nu0 + counts[k] + 2 + 2)
        mean = (kappa0 * m0 + counts[k] * means[k]) / (kappa0 + counts[k])
        rtol = 1e-10 if X64 else 3e-5
        np.testing.assert_allclose(params.means[k], mean, rtol=rtol, atol=rtol * 1000)
        # Each covariance to a relative error of its own scale (smallest eigenvalue ~1e-6).
        error = np.linalg.norm(np.asarray(params.covariances[k], np.float64) - expected)
        assert error <= (1e-9 if X64 else 3e-4) * np.linalg.norm(expected), k
