"""The default prior (Fraley & Raftery 2007, R's mclust `defaultPrior`) and its checks."""

from importlib.resources import files

import numpy as np
import pandas as pd
import pytest

from bayes_gmm import default_prior
from bayes_gmm.priors import EIGENVALUE_FLOOR, empirical_scale

# R: var(faithful); the values mclust's defaultPrior starts from.
R_VAR_FAITHFUL = np.array([[1.302728, 13.977808], [13.977808, 184.823312]])


@pytest.fixture(scope="module")
def faithful():
    return pd.read_csv(files("bayes_gmm") / "data" / "old_faithful.csv").to_numpy(float)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_defaults_match_mclust(faithful, k):
    """m0 = mean(x), kappa0 = 0.01, nu0 = D + 2, Psi0 = var(x) / K^(2/D), alpha = 1."""
    prior = default_prior(faithful, k)
    np.testing.assert_allclose(prior.mean, [3.487783, 70.897059], atol=1e-6)
    assert prior.mean_precision == 0.01 and prior.degrees_of_freedom == 4.0
    np.testing.assert_allclose(prior.covariance, R_VAR_FAITHFUL / k, rtol=1e-6)
    np.testing.assert_array_equal(prior.weight_concentration, np.ones(k))


def test_diag_and_spherical_defaults_derive_from_the_full_one(faithful):
    full = default_prior(faithful, 3).covariance
    np.testing.assert_allclose(default_prior(faithful, 3, "diag").covariance, np.diag(full))
    np.testing.assert_allclose(default_prior(faithful, 3, "spherical").covariance,
                               np.trace(full) / 2)
    np.testing.assert_allclose(default_prior(faithful, 3, "tied").covariance, full)


def test_overrides_are_kept(faithful):
    prior = default_prior(
        faithful, 2, weight_concentration_prior=[0.5, 2.0], mean_prior=[1.0, 2.0],
        mean_precision_prior=3.0, degrees_of_freedom_prior=7.5,
        covariance_prior=np.eye(2) * 4.0,
    )
    np.testing.assert_array_equal(prior.weight_concentration, [0.5, 2.0])
    np.testing.assert_array_equal(prior.mean, [1.0, 2.0])
    assert (prior.mean_precision, prior.degrees_of_freedom) == (3.0, 7.5)
    np.testing.assert_array_equal(prior.covariance, np.eye(2) * 4.0)
    sparse = default_prior(faithful, 3, weight_concentration_prior=0.1)
    np.testing.assert_array_equal(sparse.weight_concentration, [0.1, 0.1, 0.1])


def test_well_conditioned_covariance_is_left_alone(faithful):
    np.testing.assert_array_equal(empirical_scale(faithful), np.cov(faithful.T))


@pytest.mark.parametrize("case", ["constant_column", "duplicated_column", "d_greater_than_n"])
def test_singular_covariance_is_floored_to_positive_definite(case):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    if case == "constant_column":
        x[:, 2] = 4.0
    elif case == "duplicated_column":
        x[:, 2] = x[:, 0]
    else:
        x = rng.normal(size=(4, 10))
    scale = empirical_scale(x)
    eigenvalues = np.linalg.eigvalsh(scale)
    largest = np.linalg.eigvalsh(np.cov(x.T)).max()
    assert eigenvalues.min() >= EIGENVALUE_FLOOR * largest * (1 - 1e-9)
    np.testing.assert_allclose(eigenvalues.max(), largest, rtol=1e-9)
    np.testing.assert_allclose(scale, scale.T)
    # Only the null directions moved: the floored matrix agrees on the data's span.
    np.testing.assert_allclose(scale, np.cov(x.T), atol=2 * EIGENVALUE_FLOOR * largest)


@pytest.mark.parametrize("x", [np.ones((5, 2)) * 3.0, np.array([[1.0, 2.0]])])
def test_no_scale_in_the_data_gives_the_identity(x):
    np.testing.assert_array_equal(empirical_scale(x), np.eye(2))


BAD_PRIORS = [
    ({"weight_concentration_prior": -1.0}, ValueError, "weight_concentration_prior must be > 0"),
    ({"weight_concentration_prior": [1.0, np.nan]}, ValueError,
     "weight_concentration_prior must be finite"),
    ({"weight_concentration_prior": "a lot"}, TypeError,
     "weight_concentration_prior must be numeric"),
    ({"mean_prior": np.zeros((2, 2))}, ValueError, "mean_prior must have shape"),
    ({"mean_precision_prior": [1.0, 2.0]}, ValueError,
     "mean_precision_prior must be a single number"),
    ({"degrees_of_freedom_prior": 0.5}, ValueError,
     r"degrees_of_freedom_prior must be > n_features - 1 = 1; got 0.5. The default is "
     r"n_features \+ 2 = 4"),
    ({"covariance_prior": np.array([[1.0, 2.0], [2.0, 1.0]])}, ValueError,
     r"smallest eigenvalue -1. Pass a covariance matrix"),
]


@pytest.mark.parametrize("overrides, error, message", BAD_PRIORS)
def test_bad_hyperparameters(faithful, overrides, error, message):
    with pytest.raises(error, match=message):
        default_prior(faithful, 2, **overrides)


def test_bad_covariance_type_and_components(faithful):
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        default_prior(faithful, 2, "ful")
    with pytest.raises(ValueError, match="n_components must be an integer >= 1; got 0"):
        default_prior(faithful, 0)
