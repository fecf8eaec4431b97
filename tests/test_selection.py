"""Choosing K: BIC, ICL, AIC and held-out likelihood pick the true K on well-separated
synthetic data; the LOO columns are finite and ordered as arviz_stats.compare ranks them;
a sparse overfitted mixture empties its surplus components; every bad input is refused
before any work with a message that says what to do; the figures build.

Every K compiles its own programs, so the data are one-dimensional and few, the Ks few,
the chains short, and every expensive result a module-scoped fixture shared by the tests
(the LOO table reuses the compiled EM of the main table: same N, K and settings)."""

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conftest import DTYPE
from matplotlib.figure import Figure

from bayes_gmm import plots
from bayes_gmm.datasets import synthetic_mixture
from bayes_gmm.exceptions import ConvergenceWarning
from bayes_gmm.selection import (
    CRITERIA,
    OccupiedComponents,
    occupied_components,
    select_k,
)

plt.switch_backend("Agg")
TRUE_K = 2
KS = (1, 2, 3)
SEED = 0
CHAINS = {"num_chains": 2, "num_warmup": 100, "num_samples": 150}


def separated(n_samples, means, seed=SEED):
    """Well-separated 1-D clusters of unit variance, equal weights."""
    k = len(means)
    x, labels = synthetic_mixture(seed, n_samples, np.full(k, 1 / k),
                                  np.asarray(means, float)[:, None], np.ones((k, 1, 1)))
    return x.astype(DTYPE), labels


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def x():
    return separated(100, [0.0, 8.0])[0]


@pytest.fixture(scope="module")
def table(x):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        return select_k(x, KS, criteria=("bic", "icl", "aic", "heldout"),
                        random_state=SEED)


@pytest.fixture(scope="module")
def loo_table(x):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PSIS-LOO")
        return select_k(x, (1, 2), criteria=("bic", "loo"), random_state=SEED, **CHAINS)


@pytest.fixture(scope="module")
def occupied():
    x3, _ = separated(150, [-10.0, 0.0, 10.0], seed=1)
    return occupied_components(x3, 6, num_chains=2, num_warmup=300, num_samples=300,
                               random_state=SEED)


# --------------------------------------------------------------------------------------
# The table


def test_bic_and_icl_pick_the_true_k(table):
    assert table.attrs["best"]["bic"] == TRUE_K and table.attrs["best"]["icl"] == TRUE_K
    for criterion in ("bic", "icl"):
        assert table[f"best_{criterion}"].tolist() == [k == TRUE_K for k in KS]
    # By a wide margin: the p log N penalty outweighs what a third component gains.
    assert table.loc[3, "bic"] - table.loc[2, "bic"] > 5
    assert table.loc[1, "bic"] - table.loc[2, "bic"] > 100


def test_heldout_and_aic_reject_too_few_components(table):
    """Held-out likelihood and AIC estimate predictive accuracy and are not consistent
    for K: a surplus component that splits a true one costs them almost nothing (here
    AIC and the held-out likelihood of this split both prefer K = 3 by a hair), so the
    test is that they reject K = 1 clearly and see no real gain beyond the true K."""
    heldout = table["heldout_log_likelihood"]
    assert table.attrs["best"]["heldout"] in (TRUE_K, TRUE_K + 1)
    assert heldout[TRUE_K] - heldout[1] > 0.5
    assert heldout[TRUE_K + 1] < heldout[TRUE_K] + 0.05
    assert table.attrs["best"]["aic"] in (TRUE_K, TRUE_K + 1)
    assert table.loc[TRUE_K, "aic"] < table.loc[TRUE_K + 1, "aic"] + 4
    for criterion in ("aic", "heldout"):
        assert table[f"best_{criterion}"].sum() == 1


def test_table_layout_and_sign_convention(table, x):
    assert table.index.name == "k" and table.index.tolist() == list(KS)
    n, d = x.shape
    # Full covariances, D = 1: K - 1 weights, K means, K variances.
    assert table["n_parameters"].tolist() == [3 * k - 1 for k in KS]
    assert table["live_components"].tolist() == list(KS)
    assert table["converged"].all()
    log_l, p = table["log_likelihood"], table["n_parameters"]
    np.testing.assert_allclose(table["bic"], -2 * log_l + p * np.log(n))
    np.testing.assert_allclose(table["aic"], -2 * log_l + 2 * p)
    np.testing.assert_allclose(table["icl"], table["bic"] + 2 * table["entropy"])
    assert (table["entropy"] >= 0).all() and table.loc[1, "entropy"] == 0
    # The log posterior adds a finite log prior to the same likelihood.
    assert np.all(np.isfinite(table["log_posterior"]))
    assert table.attrs["n_validation"] == 25 and table.attrs["random_state"] == SEED
    assert "lower is better" in table.attrs["sign_convention"]
    assert not any(c.startswith(("elpd", "loo")) for c in table.columns)


def test_bic_matches_the_estimator(table, x):
    from bayes_gmm import BayesianGMM

    gmm = BayesianGMM(TRUE_K, n_init=3, max_iter=200, random_state=SEED).fit(x)
    np.testing.assert_allclose(table.loc[TRUE_K, "bic"], gmm.bic(x), rtol=1e-4)


def test_heldout_is_a_mean_log_density_per_point(table):
    heldout = table["heldout_log_likelihood"]
    per_point = table["log_likelihood"] / table.attrs["n_samples"]
    # Out of sample a little worse than in sample, on the same scale.
    assert np.all(np.abs(heldout - per_point) < 0.5)


def test_loo_columns(loo_table):
    assert loo_table.attrs["best"] == {"bic": TRUE_K, "loo": TRUE_K}
    columns = ["elpd_loo", "elpd_loo_se", "p_loo", "pareto_k_max", "pareto_k_bad",
               "loo_rank", "loo_elpd_diff", "loo_dse", "loo_weight"]
    assert np.all(np.isfinite(loo_table[columns].to_numpy(np.float64)))
    assert (loo_table["elpd_loo_se"] > 0).all() and (loo_table["p_loo"] > 0).all()
    assert loo_table["pareto_k_bad"].between(0, 1).all()
    # compare's ranks order the Ks by elpd, and its differences are to the best.
    by_elpd = loo_table["elpd_loo"].sort_values(ascending=False).index.tolist()
    assert loo_table["loo_rank"].sort_values().index.tolist() == by_elpd
    np.testing.assert_allclose(
        loo_table["loo_elpd_diff"],
        loo_table["elpd_loo"] - loo_table["elpd_loo"].max(), atol=1e-6)
    np.testing.assert_allclose(loo_table["loo_weight"].sum(), 1.0, atol=1e-6)
    # LOO is out of sample: the elpd stays below the log likelihood at the MAP.
    assert np.all(loo_table["elpd_loo"] < loo_table["log_likelihood"])
    assert loo_table.attrs["posterior"] == "gibbs"


def test_an_int_means_one_to_k(x):
    table = select_k(x, 2, criteria="bic", random_state=SEED)
    assert table.index.tolist() == [1, 2]
    assert list(table.columns).count("bic") == 1 and "icl" not in table.columns


# --------------------------------------------------------------------------------------
# The sparse overfitted mixture


def test_overfitted_mixture_empties_surplus_components(occupied):
    assert isinstance(occupied, OccupiedComponents)
    probabilities = occupied.probabilities
    assert probabilities.index.tolist() == list(range(1, 7))
    np.testing.assert_allclose(probabilities.sum(), 1.0)
    # P(3 occupied) is about 0.8 under this prior; 600 autocorrelated Gibbs draws (an
    # effective sample size of the order of 100) estimate it to about +-0.04, so the
    # check allows that Monte Carlo error (the start's draws decide where in it we land).
    assert occupied.mode == 3 and probabilities[3] > 0.75
    assert 3 <= occupied.mean < 3.5
    # Every chain agrees (each started with all six components holding points).
    assert (occupied.per_chain.loc[3] > 0.6).all()
    assert occupied.draws.shape == (2, 300)
    assert occupied.counts.shape == (2, 300, 6)
    np.testing.assert_array_equal(occupied.draws, (occupied.counts > 0).sum(-1))
    np.testing.assert_array_equal(occupied.counts.sum(-1), 150)
    assert np.all(np.asarray(occupied.start.weights) > 0)
    assert occupied.weight_concentration_prior == 0.01
    assert "mode=3" in repr(occupied)


# --------------------------------------------------------------------------------------
# Figures


def test_selection_figure(table, loo_table):
    fig = plots.selection_figure(table)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4
    for ax, criterion in zip(axes, ("bic", "icl", "aic", "heldout"), strict=True):
        (best,) = [line for line in ax.lines if line.get_gid() == "best"]
        assert best.get_xdata()[0] == table.attrs["best"][criterion]
    assert "lower is better" in axes[0].get_title()
    fig = plots.selection_figure(loo_table, fig=Figure())
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert any("LOO" in t and "higher is better" in t for t in titles)
    with pytest.raises(ValueError, match="no criterion column"):
        plots.selection_figure(pd.DataFrame({"k": [1, 2]}))


def test_occupied_components_figure(occupied):
    fig = plots.occupied_components_figure(occupied, reference=(3, 7))
    (ax,) = fig.axes
    bars = [p for p in ax.patches if p.get_gid() == "probability"]
    assert len(bars) == 6
    assert "mode 3" in ax.get_title()
    assert plots.occupied_components_figure(occupied.probabilities, ax=ax) is fig
    with pytest.raises(ValueError, match="reference must be two integers"):
        plots.occupied_components_figure(occupied, reference="3-7")
    with pytest.raises(TypeError, match="OccupiedComponents"):
        plots.occupied_components_figure([0.5, 0.5])


# --------------------------------------------------------------------------------------
# Bad input: refused before any work


SMALL = np.arange(10.0)[:, None]


@pytest.mark.parametrize(
    ("ks", "error", "match"),
    [
        ([], ValueError, "ks is empty"),
        (0, ValueError, "must be >= 1"),
        ([0, 1, 2], ValueError, "numbers of components >= 1; got 0"),
        ([1, -3], ValueError, "got -3"),
        ([1, 11], ValueError, "K=11, more components than the number of points in x"),
        ([1, 2.5], TypeError, "must hold integers; got 2.5"),
        ([1, True], TypeError, "must hold integers"),
        ("123", TypeError, "integer or a sequence of integers"),
        (None, TypeError, "integer or a sequence of integers"),
    ],
)
def test_bad_ks(ks, error, match):
    with pytest.raises(error, match=match):
        select_k(SMALL, ks, criteria=("bic",))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_validation_fraction_outside_the_open_interval(fraction):
    with pytest.raises(ValueError, match=r"validation_fraction must be in the open interval"):
        select_k(SMALL, [1, 2], criteria=("heldout",), validation_fraction=fraction)


def test_validation_fraction_that_leaves_too_few_training_points():
    with pytest.raises(ValueError, match=r"leaves 2 for training, fewer than the largest K"):
        select_k(SMALL, [1, 3], criteria=("bic", "heldout"), validation_fraction=0.8)
    with pytest.raises(TypeError, match="validation_fraction must be a number"):
        select_k(SMALL, [1], criteria=("heldout",), validation_fraction="0.2")


@pytest.mark.parametrize(
    ("criteria", "match"),
    [
        (("bic", "lo"), r"unknown criterion 'lo'.*Did you mean 'loo'\?"),
        (("held_out",), r"unknown criterion 'held_out'.*Did you mean 'heldout'\?"),
        (("waic",), r"unknown criterion 'waic'; choose from 'bic'"),
        ((), "criteria is empty"),
    ],
)
def test_unknown_criteria(criteria, match):
    with pytest.raises(ValueError, match=match):
        select_k(SMALL, [1, 2], criteria=criteria)


def test_other_bad_settings():
    with pytest.raises(ValueError, match="posterior must be one of 'gibbs', 'nuts'"):
        select_k(SMALL, [1], posterior="hmc")
    with pytest.raises(ValueError, match="weight_concentration_prior must be one number"):
        select_k(SMALL, [1, 2], criteria="bic", weight_concentration_prior=[1.0, 1.0])
    with pytest.raises(ValueError, match="mean_precision_prior must be > 0"):
        select_k(SMALL, [1, 2], criteria="bic", mean_precision_prior=-1.0)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        select_k(SMALL, [1], num_samples=0)
    with pytest.raises(TypeError, match="random_state must be None, an int"):
        select_k(SMALL, [1], criteria="bic", random_state="seed")
    with pytest.raises(ValueError, match="covariance_type"):
        select_k(SMALL, [1], covariance_type="fully")
    assert set(CRITERIA) == {"bic", "icl", "aic", "heldout", "loo"}


@pytest.mark.parametrize(
    ("k_max", "error", "match"),
    [
        (1, ValueError, r"k_max must be >= 2"),
        (11, ValueError, r"k_max=11 exceeds the number of points \(10\)"),
        (4.0, TypeError, "k_max must be an integer"),
        (None, TypeError, "k_max must be an integer"),
    ],
)
def test_bad_k_max(k_max, error, match):
    with pytest.raises(error, match=match):
        occupied_components(SMALL, k_max)


def test_bad_weight_concentration_prior():
    for value in (0.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="weight_concentration_prior must be > 0"):
            occupied_components(SMALL, 3, weight_concentration_prior=value)
    with pytest.raises(TypeError, match="weight_concentration_prior must be a number"):
        occupied_components(SMALL, 3, weight_concentration_prior=None)
    with pytest.raises(TypeError, match="weight_concentration_prior must be a number"):
        occupied_components(SMALL, 3, weight_concentration_prior=[0.1, 0.1, 0.1])
    # Not sparse: a warning, and (here) the next check stops it before any work.
    with pytest.warns(UserWarning, match="not below 1"), pytest.raises(
        ValueError, match="num_chains must be an integer >= 1"
    ):
        occupied_components(SMALL, 3, weight_concentration_prior=1.0, num_chains=0)


# --------------------------------------------------------------------------------------
# Model search: several covariance types in one call


@pytest.fixture(scope="module")
def grid():
    x = separated(120, [0.0, 6.0, 12.0])[0]
    x = np.column_stack([x[:, 0], np.random.default_rng(1).normal(size=len(x))])
    types = ["full", "diag", "spherical", "tied"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        table = select_k(x, (1, 2, 3, 4), covariance_type=types, criteria=("bic", "icl"),
                         random_state=SEED)
    return x, types, table


def test_model_search_has_one_row_per_type_and_k(grid):
    _, types, table = grid
    assert table.index.names == ["covariance_type", "k"]
    assert list(table.index) == [(t, k) for t in types for k in (1, 2, 3, 4)]
    assert table.attrs["covariance_type"] == types


def test_model_search_rows_equal_single_type_searches(grid):
    """Each type's rows are what select_k gives for that type alone (same keys, same
    programs), so the list form is only a faster way to the same table."""
    x, types, table = grid
    for t in ("diag", "tied"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            alone = select_k(x, (1, 2, 3, 4), covariance_type=t, criteria=("bic", "icl"),
                             random_state=SEED)
        columns = ["log_likelihood", "log_posterior", "bic", "icl", "n_parameters"]
        np.testing.assert_allclose(table.loc[t, columns].to_numpy(float),
                                   alone[columns].to_numpy(float), rtol=1e-12)


def test_model_search_marks_one_best_and_a_runner_up(grid):
    _, _, table = grid
    for criterion in ("bic", "icl"):
        assert table[f"best_{criterion}"].sum() == 1
        ranked = table[criterion].sort_values(kind="stable")
        assert table.attrs["best"][criterion] == ranked.index[0]
        assert table.attrs["runner_up"][criterion] == ranked.index[1]
        assert table.loc[ranked.index[0], f"best_{criterion}"]
    # Three unit-variance clusters along the first axis, independent unit noise along
    # the second: every type but full holds the true model with fewer parameters.
    best_type, best_k = table.attrs["best"]["bic"]
    assert best_k == 3 and best_type != "full"


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ([], ValueError, "empty list"),
        (["full", "full"], ValueError, "more than once"),
        (["full", "diagonal"], ValueError, "covariance_type"),
        (3, TypeError, "list of them"),
    ],
)
def test_model_search_refuses_bad_covariance_types(x, value, error, match):
    with pytest.raises(error, match=match):
        select_k(x, 2, covariance_type=value, criteria=("bic",))
