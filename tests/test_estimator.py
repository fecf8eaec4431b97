"""BayesianGMM: the scikit-learn style façade. Its numbers are checked against
independent references (SciPy densities, scikit-learn's BIC/AIC and predictions from the
same parameters); every bad input has its message; scikit-learn's common checks run."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import reference
from conftest import DTYPE, X64, two_clusters

import bayes_gmm.estimator as estimator_module
from bayes_gmm import BayesianGMM, ConvergenceWarning, NotFittedError

SUM_RTOL = 1e-10 if X64 else 2e-5


@pytest.fixture(scope="module")
def x():
    return two_clusters(0)


@pytest.fixture(scope="module")
def fitted(x):
    return {
        ct: BayesianGMM(2, covariance_type=ct, random_state=0).fit(x)
        for ct in ("full", "tied", "diag", "spherical")
    }


def _agreement(labels, truth):
    """Fraction of points on which two labellings of two clusters agree, up to relabelling."""
    same = np.mean(labels == truth)
    return max(same, 1 - same)


# --------------------------------------------------------------------------------------
# What a fit gives


def test_fitted_attributes(fitted, x, covariance_type):
    gmm = fitted[covariance_type]
    k, d = 2, x.shape[1]
    shapes = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}
    assert gmm.weights_.shape == (k,) and gmm.means_.shape == (k, d)
    assert gmm.covariances_.shape == shapes[covariance_type]
    assert gmm.converged_ is True and gmm.n_iter_ >= 1
    assert gmm.log_posterior_history_.shape == (gmm.n_iter_ + 1,)
    assert gmm.log_posterior_history_[-1] == pytest.approx(gmm.lower_bound_)
    assert gmm.params_history_ is None and gmm.n_features_in_ == d
    assert not hasattr(gmm, "feature_names_in_")
    np.testing.assert_array_equal(gmm.dead_components_, [False, False])
    np.testing.assert_allclose(gmm.prior_.mean, x.mean(0), rtol=1e-6)


def test_lower_bound_is_the_log_posterior(fitted, x, covariance_type):
    """lower_bound_ is log p(X | theta) + log p(theta) with every constant, by SciPy."""
    gmm = fitted[covariance_type]
    expected = reference.log_posterior(x, gmm.params_, gmm.prior_, covariance_type)
    assert gmm.lower_bound_ == pytest.approx(expected, rel=SUM_RTOL)
    loglik = reference.e_step(x, gmm.params_, covariance_type)[1].sum()
    assert gmm.log_likelihood_ == pytest.approx(loglik, rel=SUM_RTOL)


def test_fit_predict_round_trip(fitted, x, covariance_type):
    gmm = fitted[covariance_type]
    truth = np.repeat([0, 1], [300, 200])
    labels = gmm.predict(x)
    assert labels.shape == (len(x),) and _agreement(labels, truth) > 0.99
    proba = gmm.predict_proba(x)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.argmax(proba, 1), labels)
    expected_resp, expected_density = reference.e_step(x, gmm.params_, covariance_type)
    np.testing.assert_allclose(gmm.score_samples(x), expected_density, rtol=1e-5)
    assert gmm.score(x) == pytest.approx(expected_density.mean(), rel=1e-5)
    np.testing.assert_array_equal(
        BayesianGMM(2, covariance_type=covariance_type, random_state=0).fit_predict(x), labels
    )


def test_predictions_match_sklearn_from_the_same_parameters(fitted, x, covariance_type):
    """Same parameters in scikit-learn's GaussianMixture: same densities, BIC and AIC."""
    mixture = pytest.importorskip("sklearn.mixture")
    gmm = fitted[covariance_type]
    sk = mixture.GaussianMixture(2, covariance_type=covariance_type)
    sk.weights_, sk.means_, sk.covariances_ = (a.astype(np.float64) for a in gmm.params_)
    sk.precisions_cholesky_ = mixture._gaussian_mixture._compute_precision_cholesky(
        sk.covariances_, covariance_type
    )
    sk.n_features_in_ = x.shape[1]
    rtol = 1e-9 if X64 else 1e-5
    np.testing.assert_allclose(gmm.score_samples(x), sk.score_samples(x), rtol=rtol)
    np.testing.assert_allclose(gmm.predict_proba(x), sk.predict_proba(x), atol=rtol)
    assert gmm.bic(x) == pytest.approx(sk.bic(x), rel=rtol)
    assert gmm.aic(x) == pytest.approx(sk.aic(x), rel=rtol)


def test_sample(fitted, covariance_type):
    gmm = fitted[covariance_type]
    draws, labels = gmm.sample(20000)
    assert draws.shape == (20000, 2) and labels.shape == (20000,)
    assert draws.dtype == gmm.means_.dtype
    np.testing.assert_array_equal(labels, np.sort(labels))
    # Component proportions and means within 5 standard errors of the fitted ones.
    share = np.bincount(labels, minlength=2) / 20000
    np.testing.assert_allclose(share, gmm.weights_, atol=5 * np.sqrt(0.25 / 20000))
    for k in range(2):
        mine = draws[labels == k]
        se = mine.std(0) / np.sqrt(len(mine))
        assert np.all(np.abs(mine.mean(0) - gmm.means_[k]) < 5 * se)
    again, _ = gmm.sample(20000)
    np.testing.assert_array_equal(draws, again)  # random_state=0: reproducible


def test_float32_in_float32_out(x):
    gmm = BayesianGMM(2, random_state=0).fit(x.astype(np.float32))
    for a in (gmm.weights_, gmm.means_, gmm.covariances_, gmm.log_posterior_history_):
        assert a.dtype == np.float32
    assert gmm.score_samples(x.astype(np.float32)).dtype == np.float32


def test_same_seed_same_fit(x):
    a = BayesianGMM(3, init_params="random", n_init=2, random_state=4).fit(x)
    b = BayesianGMM(3, init_params="random", n_init=2, random_state=4).fit(x)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert a.lower_bound_ == b.lower_bound_
    assert a.seed_ == b.seed_ == 4


def test_initial_values_are_used(x, covariance_type):
    # max_iter=0 asks for the starting values themselves (and so does not warn).
    start = BayesianGMM(2, covariance_type=covariance_type, random_state=0, max_iter=0).fit(x)
    given = BayesianGMM(
        2, covariance_type=covariance_type, max_iter=0,
        weights_init=start.weights_, means_init=start.means_,
        covariances_init=start.covariances_,
    )
    given.fit(x)
    for a, b in zip(given.params_, start.params_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # Means alone: points go to the nearest given mean; the M-step fills in the rest.
    means = np.array([[5.0, 5.0], [0.0, 0.0]])
    only_means = BayesianGMM(2, covariance_type=covariance_type, means_init=means,
                             max_iter=0)
    only_means.fit(x)
    np.testing.assert_allclose(only_means.means_, means)
    np.testing.assert_allclose(only_means.weights_, [0.4, 0.6], atol=0.01)


def test_history_is_kept_when_asked(x):
    gmm = BayesianGMM(2, init_params="random", keep_history=True, random_state=1).fit(x)
    n = gmm.n_iter_
    assert gmm.params_history_.means.shape == (n + 1, 2, 2)
    np.testing.assert_allclose(gmm.params_history_.means[-1], gmm.means_)
    assert np.all(np.diff(gmm.log_posterior_history_) > -1e-3)


def test_not_converged_warns(x):
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        gmm = BayesianGMM(3, init_params="random", max_iter=2, tol=0.0, random_state=0).fit(x)
    assert gmm.converged_ is False and gmm.n_iter_ == 2


def test_dead_components_are_reported_and_not_counted(x):
    gmm = BayesianGMM(3, weight_concentration_prior=0.5, random_state=0,
                      means_init=[[0.0, 0.0], [5.0, 5.0], [400.0, 400.0]]).fit(x)
    np.testing.assert_array_equal(gmm.dead_components_, [False, False, True])
    two = BayesianGMM(2, weight_concentration_prior=0.5, random_state=0).fit(x)
    assert gmm._n_parameters() == two._n_parameters()
    assert np.all(np.isfinite(gmm.predict_proba(x))) and np.all(gmm.predict(x) < 2)


@pytest.mark.parametrize("case", ["constant_column", "duplicated_points", "d_greater_than_n"])
def test_singular_data_still_fits(covariance_type, case):
    rng = np.random.default_rng(1)
    if case == "constant_column":
        x = np.column_stack([two_clusters(0), np.full(500, 3.0)])
    elif case == "duplicated_points":
        x = np.repeat(rng.normal(size=(4, 2)), 25, axis=0)
    else:
        x = rng.normal(size=(6, 15))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm = BayesianGMM(2, covariance_type=covariance_type, random_state=0,
                          max_iter=1000).fit(x)
    # With D > N the default prior's floored eigenvalues give covariances of condition
    # ~1e6, and in float32 the log posterior is then computed only to ~3e-4 relative: the
    # 1e-6 stopping rule is met by chance (any start, padded or not). Convergence is
    # asserted where the precision allows it.
    if X64 or case != "d_greater_than_n":
        assert gmm.converged_
    assert np.isfinite(gmm.lower_bound_)
    assert np.all(np.isfinite(gmm.score_samples(x)))


def test_dataframe_feature_names(x):
    frame = pd.DataFrame(x, columns=["eruptions", "waiting"])
    gmm = BayesianGMM(2, random_state=0).fit(frame)
    np.testing.assert_array_equal(gmm.feature_names_in_, ["eruptions", "waiting"])
    with pytest.raises(ValueError, match="same order"):
        gmm.predict(frame[["waiting", "eruptions"]])
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        gmm.predict(x)
    refit = gmm.fit(x)
    assert not hasattr(refit, "feature_names_in_")


def test_pickle_round_trip(fitted, x):
    gmm = pickle.loads(pickle.dumps(fitted["full"]))
    np.testing.assert_array_equal(gmm.predict_proba(x), fitted["full"].predict_proba(x))


def test_params_protocol():
    sklearn_base = pytest.importorskip("sklearn.base")
    gmm = BayesianGMM(3, covariance_type="diag", mean_precision_prior=0.5)
    params = gmm.get_params()
    assert params["n_components"] == 3 and params["mean_precision_prior"] == 0.5
    assert len(params) == 17
    gmm.set_params(n_components=4, tol=1e-3)
    assert gmm.n_components == 4 and gmm.tol == 1e-3
    with pytest.raises(ValueError, match="Invalid parameter 'ncomponents'"):
        gmm.set_params(ncomponents=2)
    copy = sklearn_base.clone(gmm)
    assert copy is not gmm and copy.get_params() == gmm.get_params()
    assert repr(gmm) == (
        "BayesianGMM(covariance_type='diag', mean_precision_prior=0.5, n_components=4, tol=0.001)"
    )


# --------------------------------------------------------------------------------------
# Bad input: each gets a clear error before any work is done

BAD_FIT = [
    # (description, estimator kwargs, X, exception, message)
    ("nan", {}, "nan", ValueError, r"NaN or inf .* first is NaN at row 3, column 1"),
    ("inf", {}, "inf", ValueError, r"first is infinity \(inf\)"),
    ("1-d", {}, "1d", ValueError, r"got a 1-D array .* Reshape .*reshape\(-1, 1\)"),
    ("3-d", {}, "3d", ValueError, r"must be 2-D .* got 3 dimensions"),
    ("empty", {}, "empty", ValueError, r"0 sample\(s\)"),
    ("no features", {}, "nofeatures", ValueError, r"0 feature\(s\)"),
    ("text", {}, "text", TypeError, r"must be numeric; got an array of dtype <U"),
    ("object", {}, "object", TypeError, r"must be numeric; converting it to float failed"),
    ("complex", {}, "complex", ValueError, r"Complex data not supported"),
    ("sparse", {}, "sparse", TypeError, r"sparse matrix.*toarray"),
    ("fewer points than components", {"n_components": 11}, "small", ValueError,
     r"X has 10 sample\(s\) but n_components=11"),
    ("n_components 0", {"n_components": 0}, None, ValueError, r"n_components must be .* got 0"),
    ("n_components float", {"n_components": 2.5}, None, TypeError, r"n_components must be"),
    ("covariance_type", {"covariance_type": "fll"}, None, ValueError,
     r"covariance_type must be one of 'full', 'tied', 'diag', 'spherical'; got 'fll'"),
    ("init", {"init_params": "kmeans"}, None, ValueError,
     r"init_params must be one of 'k-means\+\+', 'random', 'random_from_data'; got 'kmeans'"),
    ("tol", {"tol": -1.0}, None, ValueError, r"tol must be a finite number >= 0"),
    ("max_iter", {"max_iter": -1}, None, ValueError, r"max_iter must be an integer >= 0"),
    ("n_init", {"n_init": 0}, None, ValueError, r"n_init must be an integer >= 1"),
    ("chunk_size", {"chunk_size": 0}, None, ValueError, r"chunk_size must be an integer >= 1"),
    ("random_state", {"random_state": "seed"}, None, TypeError, r"random_state must be"),
    ("dof", {"degrees_of_freedom_prior": 1.0}, None, ValueError,
     r"degrees_of_freedom_prior must be > n_features - 1 = 1; got 1.0"),
    ("kappa 0", {"mean_precision_prior": 0.0}, None, ValueError,
     r"mean_precision_prior must be > 0; got 0.0"),
    ("kappa negative", {"mean_precision_prior": -2}, None, ValueError,
     r"mean_precision_prior must be > 0"),
    ("alpha 0", {"weight_concentration_prior": 0.0}, None, ValueError,
     r"weight_concentration_prior must be > 0"),
    ("alpha shape", {"weight_concentration_prior": [1.0, 1.0, 1.0]}, None, ValueError,
     r"weight_concentration_prior must be .* shape \(n_components,\) = \(2,\); got shape \(3,\)"),
    ("mean prior shape", {"mean_prior": [0.0]}, None, ValueError,
     r"mean_prior must have shape \(n_features,\) = \(2,\); got shape \(1,\)"),
    ("psi not spd", {"covariance_prior": [[1.0, 0.0], [0.0, -0.2]]}, None, ValueError,
     r"covariance_prior must be symmetric positive definite \(2 x 2\); got a matrix with "
     r"smallest eigenvalue -0.2"),
    ("psi not symmetric", {"covariance_prior": [[1.0, 0.5], [0.0, 1.0]]}, None, ValueError,
     r"covariance_prior must be symmetric positive definite .* not symmetric"),
    ("psi shape", {"covariance_prior": np.eye(3)}, None, ValueError,
     r"covariance_prior must have shape \(n_features, n_features\) = \(2, 2\)"),
    ("psi diag shape", {"covariance_type": "diag", "covariance_prior": np.eye(2)}, None,
     ValueError, r"covariance_prior must have shape \(n_features,\) = \(2,\) for "
     r"covariance_type='diag'"),
    ("psi spherical", {"covariance_type": "spherical", "covariance_prior": -1.0}, None,
     ValueError, r"covariance_prior must be > 0"),
    ("weights_init shape", {"weights_init": [1.0]}, None, ValueError,
     r"weights_init must have shape \(n_components,\) = \(2,\); got shape \(1,\)"),
    ("weights_init sum", {"weights_init": [0.5, 0.6]}, None, ValueError,
     r"weights_init must be positive and sum to 1"),
    ("means_init shape", {"means_init": np.zeros((3, 2))}, None, ValueError,
     r"means_init must have shape \(n_components, n_features\) = \(2, 2\); got shape \(3, 2\)"),
    ("covariances_init shape", {"covariances_init": np.ones((2, 2))}, None, ValueError,
     r"covariances_init \(covariance_type='full'\) must have shape"),
    ("covariances_init spd", {"covariances_init": [np.eye(2), -np.eye(2)]}, None, ValueError,
     r"covariances_init must hold symmetric positive definite matrices"),
    ("covariances_init diag", {"covariance_type": "diag", "covariances_init": -np.ones((2, 2))},
     None, ValueError, r"covariances_init must be > 0"),
]


def _bad_x(kind):
    x = two_clusters(0, n=(5, 5)).astype(np.float64)
    if kind == "nan":
        x[3, 1] = np.nan
    elif kind == "inf":
        x[0, 0] = np.inf
    elif kind == "1d":
        x = x[:, 0]
    elif kind == "3d":
        x = x[None]
    elif kind == "empty":
        x = np.empty((0, 2))
    elif kind == "nofeatures":
        x = np.empty((10, 0))
    elif kind == "text":
        x = np.array([["a", "b"]] * 10)
    elif kind == "object":
        x = x.astype(object)
        x[0, 0] = {"foo": "bar"}
    elif kind == "complex":
        x = x + 1j
    elif kind == "sparse":
        from scipy import sparse

        x = sparse.csr_matrix(x)
    return x


@pytest.mark.parametrize("case", BAD_FIT, ids=[c[0] for c in BAD_FIT])
def test_bad_input_is_refused_before_any_work(monkeypatch, case):
    _, kwargs, x_kind, error, message = case
    kwargs = {"n_components": 2, **kwargs}

    def no_work(*args, **kwargs):
        raise AssertionError("fit_map ran although the input was invalid")

    monkeypatch.setattr(estimator_module, "fit_map", no_work)
    with pytest.raises(error, match=message):
        BayesianGMM(**kwargs).fit(_bad_x(x_kind))


def test_predict_on_other_features_or_before_fit(x):
    with pytest.raises(NotFittedError, match="not fitted yet. Call 'fit'"):
        BayesianGMM(2).predict(x)
    gmm = BayesianGMM(2, random_state=0).fit(x)
    wider = np.column_stack([x, x[:, :1]])
    for method in (gmm.predict, gmm.predict_proba, gmm.score_samples, gmm.score, gmm.bic):
        with pytest.raises(ValueError, match="X has 3 features, but BayesianGMM is expecting 2"):
            method(wider)
    with pytest.raises(ValueError, match="NaN"):
        gmm.predict(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        gmm.sample(0)


def test_floating_point_failure_is_an_error_not_nan(monkeypatch, x):
    """Should the core ever return a non-finite result, the estimator says so."""
    real = estimator_module.fit_map

    def broken(*args, **kwargs):
        params, info = real(*args, **kwargs)
        return params, info._replace(log_posterior=info.log_posterior * np.nan)

    monkeypatch.setattr(estimator_module, "fit_map", broken)
    gmm = BayesianGMM(2, random_state=0)
    with pytest.raises(FloatingPointError, match="non-finite log posterior .* Enable float64"):
        gmm.fit(x)
    assert not hasattr(gmm, "weights_")


# --------------------------------------------------------------------------------------
# scikit-learn's common estimator checks

try:
    from sklearn.utils.estimator_checks import parametrize_with_checks
except ImportError:  # pragma: no cover - scikit-learn is a test extra
    parametrize_with_checks = None

EXPECTED_FAILED_CHECKS = {
    # scikit-learn's check wants its own sklearn.exceptions.NotFittedError class. Ours is
    # bayes_gmm.NotFittedError, a ValueError and AttributeError like scikit-learn's; it
    # cannot subclass it without making scikit-learn (0.8 s of import) a dependency.
    "check_estimators_unfitted": "raises bayes_gmm.NotFittedError, not sklearn's class",
}

if parametrize_with_checks is not None:
    with warnings.catch_warnings():
        # Not inheriting from sklearn.base.BaseEstimator is deliberate (no dependency).
        warnings.filterwarnings("ignore", "Estimator BayesianGMM does not inherit")
        sklearn_checks = parametrize_with_checks(
            [BayesianGMM(n_components=2, random_state=0)],
            expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
        )

    @pytest.mark.float32_pass  # the API contract; the fits it makes are tested in both
    @sklearn_checks
    def test_sklearn_compatible(estimator, check):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            check(estimator)


def test_dtype_of_results_follows_data_and_x64(x):
    gmm = BayesianGMM(2, random_state=0).fit(x.astype(np.float64))
    assert gmm.means_.dtype == (np.float64 if X64 else np.float32) == DTYPE
