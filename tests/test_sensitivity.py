"""Prior sensitivity: the MAP sweep against single fits, power scaling against refits.

- A sweep point is the fit that ``fit_map`` gives from the same start under that point's
  prior (the sweep is exact, only batched), and a second sweep of the same size does not
  re-trace. The sweep runs padded (rows to a bucket, component slots to 16): it equals
  the unpadded program to rounding, and a sweep of another K or of another N in the same
  row bucket compiles nothing.
- Bad grids are refused before any work, each with a message naming what is wrong.
- The power-scaled prior is the conjugate prior whose log density is ``alpha`` times the
  base one up to a constant (checked against ``em.log_prior`` at random theta, every
  covariance type), and psense's prior sensitivity agrees with exact Gibbs reruns.
- The figures build, with one panel per quantity and a log axis for geometric grids.

Sizes are small and compiled programs are shared through module-scoped fixtures: the
sweeps all have four points, so they compile once.
"""

from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import DTYPE, X64, count_compilations, two_clusters
from test_em import random_prior

from bayes_gmm import GMMParams, GMMPrior, default_prior, fit_map, plots, program_store
from bayes_gmm.em import log_prior
from bayes_gmm.sensitivity import (
    HYPERPARAMETERS,
    TRACE_COUNT,
    check_grid,
    cjs_distance,
    point_prior,
    power_scaled_prior,
    power_scaling_sensitivity,
    prior_sweep,
    refit_check,
)

plt.switch_backend("Agg")
K = 2
RTOL = 1e-12 if X64 else 2e-5


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    x = two_clusters(n=(45, 30))
    prior = default_prior(x, K)
    start, _ = fit_map(jax.random.key(3), x, prior, max_iter=0)
    return x, prior, start


@pytest.fixture(scope="module")
def crossed(data):
    x, prior, start = data
    grid = {"mean_precision_prior": [0.01, 10.0], "weight_concentration_prior": [0.5, 3.0]}
    return prior_sweep(x, prior, grid, init_params=start)


# --------------------------------------------------------------------------------------
# The MAP sweep


def test_sweep_point_equals_single_fit(data, crossed):
    x, prior, start = data
    ds = crossed
    assert ds.sizes["weight_concentration_prior"] == 2 and ds.sizes["mean_precision_prior"] == 2
    for alpha in ds["weight_concentration_prior"].values:
        for kappa in ds["mean_precision_prior"].values:
            point = ds.sel(weight_concentration_prior=alpha, mean_precision_prior=kappa)
            one = point_prior(prior, weight_concentration_prior=alpha,
                              mean_precision_prior=kappa)
            params, info = fit_map(jax.random.key(0), x, one, start)
            perm = point["label_permutation"].values
            np.testing.assert_allclose(point["weights"], np.asarray(params.weights)[perm],
                                       rtol=RTOL, atol=1e-7)
            np.testing.assert_allclose(point["means"], np.asarray(params.means)[perm],
                                       rtol=RTOL, atol=1e-6)
            np.testing.assert_allclose(point["covariances"],
                                       np.asarray(params.covariances)[perm], rtol=RTOL)
            np.testing.assert_allclose(point["log_posterior"], info.log_posterior, rtol=RTOL)
            np.testing.assert_allclose(point["log_likelihood"], info.log_likelihood,
                                       rtol=RTOL)
            assert int(point["n_iter"]) == int(info.n_iter)
            assert bool(point["converged"]) == bool(info.converged)
    # The reference is the base prior's fit from the same start.
    params, info = fit_map(jax.random.key(0), x, prior, start)
    np.testing.assert_allclose(ds["reference_weights"], params.weights, rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(ds["reference_log_posterior"], info.log_posterior, rtol=RTOL)


def test_sweep_does_not_retrace(data, crossed):
    x, prior, start = data
    before = TRACE_COUNT["sweep"]
    assert before >= 1  # the crossed fixture's sweep (four points) was traced
    # Four other values of the same shape, zipped instead of crossed, another key.
    other = prior_sweep(x, prior, {"degrees_of_freedom_prior": [4.0, 5.0, 8.0, 20.0],
                                   "covariance_prior_scale": [0.1, 0.5, 2.0, 4.0]},
                        combine="zip", init_params=start)
    again = prior_sweep(x, prior, {"mean_precision_prior": [0.02, 0.2, 2.0, 20.0]},
                        init_params=start, key=7)
    assert TRACE_COUNT["sweep"] == before
    assert other.sizes["point"] == 4 and again.sizes["mean_precision_prior"] == 4


def test_one_trace_serves_every_point(data, monkeypatch):
    """A number of points in a new batch bucket (nine points and the reference: 10, after
    the fixtures' 8): the per-point fit is traced once for all nine points (vmap), not
    once per point, and the sweep compiles once."""
    from bayes_gmm import sensitivity

    x, prior, start = data
    calls = []
    fit_point = sensitivity._fit_point

    def counting_fit_point(*args, **kwargs):
        calls.append(1)
        return fit_point(*args, **kwargs)

    monkeypatch.setattr(sensitivity, "_fit_point", counting_fit_point)
    before = TRACE_COUNT["sweep"]
    values = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
    ds = prior_sweep(x[:-1], prior, {"mean_precision_prior": values}, init_params=start)
    assert ds.sizes["mean_precision_prior"] == 9
    assert TRACE_COUNT["sweep"] == before + 1
    assert len(calls) == 1


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_padded_sweep_equals_unpadded(covariance_type):
    """The padded sweep (75 rows in a bucket of 80, K = 3 in 16 slots) against the same
    program run unpadded (no row mask, K slots): equal to rounding. Tied covariances are
    shared, so they are not padded; the other types pad alike (tests/test_padding.py)."""
    from bayes_gmm import sensitivity

    x = two_clusters(n=(45, 30))
    prior = default_prior(x, 3, covariance_type)
    start, _ = fit_map(jax.random.key(3), x, prior, covariance_type=covariance_type,
                       max_iter=0)
    start = GMMParams(*(np.asarray(a) for a in start))
    values = {"mean_precision_prior": np.array([0.01, 10.0]),
              "weight_concentration_prior": np.array([0.5, 3.0])}
    points, _ = sensitivity._points(values, "cross")
    hyper = sensitivity._stack_hyperparameters(prior, points, x.dtype)
    params, info = sensitivity.sweep_fits(x, prior, start, hyper,
                                          covariance_type=covariance_type)
    assert params.weights.shape == (5, 3)
    # Compiled as the stored program is (bayes_gmm.program_store.compiler_options), so
    # that the two differ by the padding alone.
    unpadded = jax.jit(sensitivity._sweep_fits_core, static_argnums=(7, 8, 9),
                       compiler_options=program_store.compiler_options(x))
    params_0, info_0 = unpadded(x, np.ones(len(x), x.dtype), prior, start, hyper,
                                np.asarray(1e-6, x.dtype), np.int32(100), covariance_type,
                                101, None)
    # As in tests/test_padding.py: in float64 the same steps to a few ulps; in float32 the
    # rounding is of the order of the stopping rule, so a fit may stop one step earlier
    # or later (point 3 of the full type does), and then differs by what one slow EM
    # step moves it (5e-3 relative), its log posterior by a few times tol.
    rtol, atol, lp_rtol = (1e-10, 1e-10, 1e-10) if X64 else (5e-3, 1e-5, 1e-5)
    for got, want in zip(params, params_0, strict=True):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    for got, want in zip((info.log_posterior, info.log_likelihood),
                         (info_0.log_posterior, info_0.log_likelihood), strict=True):
        np.testing.assert_allclose(got, want, rtol=lp_rtol)
    np.testing.assert_array_equal(info.dead, info_0.dead)
    steps_apart = np.abs(np.asarray(info.n_iter) - np.asarray(info_0.n_iter))
    assert np.all(steps_apart == 0) if X64 else np.all(steps_apart <= 1)


def test_sweep_of_another_k_compiles_nothing(data, crossed):
    """After the crossed fixture's sweep (K = 2, 75 rows, four points): K = 3 and K = 4,
    on 75 and on 72 rows (the same row bucket), from k-means++ or a given start, with
    four or six points (the same batch bucket), reuse its programs (JAX's compile
    events: none)."""
    x, _, _ = data
    grid = {"mean_precision_prior": [0.02, 0.2, 2.0, 20.0]}
    prior_3 = default_prior(x, 3)
    start, _ = fit_map(jax.random.key(1), x, prior_3, max_iter=0)
    with count_compilations() as compiled:
        three = prior_sweep(x, prior_3, grid, init_params=start)
        four = prior_sweep(x[:72], default_prior(x[:72], 4),
                           {"degrees_of_freedom_prior": [4.0, 5.0, 8.0, 20.0, 50.0, 99.0]},
                           key=jax.random.key(5))
    assert compiled == []
    assert three.sizes["component"] == 3 and four.sizes["component"] == 4
    assert four.sizes["degrees_of_freedom_prior"] == 6
    assert np.all(np.isfinite(four["log_posterior"]))


def test_dataset_layout_and_dataframe(data, crossed):
    x, prior, start = data
    ds = crossed
    lead = ("weight_concentration_prior", "mean_precision_prior")  # HYPERPARAMETERS order
    assert ds["weights"].dims == lead + ("component",)
    assert ds["means"].dims == lead + ("component", "feature")
    assert ds["covariances"].dims == lead + ("component", "feature", "feature_bis")
    for name in ("log_posterior", "log_likelihood", "n_effective_components", "converged",
                 "n_iter"):
        assert ds[name].dims == lead
    assert ds["weights"].dtype == DTYPE and ds["covariances"].dtype == DTYPE
    assert ds["converged"].all()
    np.testing.assert_allclose(ds["weights"].sum("component"), 1.0, rtol=1e-5)
    expected = (ds["weights"] > ds.attrs["weight_threshold"]).sum("component")
    np.testing.assert_array_equal(ds["n_effective_components"], expected)
    # Aligned: every point's components sit near the reference's.
    distance = np.abs(ds["means"] - ds["reference_means"]).max(("component", "feature"))
    assert float(distance.max()) < 1.0
    frame = ds.to_dataframe()
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 4 * K * 2 * 2
    assert {"weights", "log_posterior", "n_effective_components"} <= set(frame.columns)


def test_zip_and_feature_names(data):
    x, prior, start = data
    frame = pd.DataFrame(np.asarray(x), columns=["length", "width"])
    ds = prior_sweep(frame, prior, {"mean_precision_prior": [0.01, 0.1, 1.0, 10.0],
                                    "weight_concentration_prior": [1.0, 1.0, 2.0, 2.0]},
                     combine="zip", init_params=start)
    assert ds["weights"].dims == ("point", "component")
    assert list(ds["feature"].values) == ["length", "width"]
    np.testing.assert_allclose(ds["mean_precision_prior"], [0.01, 0.1, 1.0, 10.0])
    assert ds["mean_precision_prior"].dims == ("point",)
    # Stronger pull of the means towards the data mean as kappa0 grows.
    spread = np.abs(ds["means"] - x.mean(0)).sum(("component", "feature")).values
    assert spread[0] > spread[-1]
    assert len(ds.to_dataframe()) == 4 * K * 2 * 2


BAD_GRIDS = [
    ({}, "grid is empty"),
    ({"mean_precision": [1.0]}, "unknown hyperparameter 'mean_precision'.*mean_precision_prior"),
    ({"kappa0": [1.0]}, "unknown hyperparameter 'kappa0'; expected keys"),
    ({"mean_precision_prior": []}, r"grid\['mean_precision_prior'\] is empty"),
    ({"mean_precision_prior": 1.0}, "must be a 1-D array.*Wrap a single value"),
    ({"mean_precision_prior": [[1.0, 2.0]]}, r"1-D array of values; got shape \(1, 2\)"),
    ({"mean_precision_prior": [1.0, np.nan]}, "must be finite; got nan at index 1"),
    ({"weight_concentration_prior": [1.0, 0.0]}, "must be > 0; got 0.0 at index 1"),
    ({"covariance_prior_scale": [-1.0]}, "must be > 0; got -1.0 at index 0"),
    ({"degrees_of_freedom_prior": [3.0, 1.0]}, r"> n_features - 1 = 1.*got 1.0 at index 1"),
    ({"mean_precision_prior": ["a"]}, "1-D array of numbers"),
]


@pytest.mark.parametrize("grid, message", BAD_GRIDS)
def test_bad_grids_are_refused(data, grid, message):
    x, prior, _ = data
    with pytest.raises(ValueError, match=message):
        prior_sweep(x, prior, grid)


def test_other_bad_input(data):
    x, prior, start = data
    with pytest.raises(ValueError, match="combine='zip' needs arrays of equal length"):
        check_grid({"mean_precision_prior": [1.0, 2.0], "covariance_prior_scale": [1.0]}, 2,
                   "zip")
    with pytest.raises(TypeError, match="grid must be a dict"):
        prior_sweep(x, prior, [("mean_precision_prior", [1.0])])
    with pytest.raises(ValueError, match="combine must be one of"):
        prior_sweep(x, prior, {"mean_precision_prior": [1.0]}, combine="outer")
    with pytest.raises(ValueError, match="weight_threshold must be in"):
        prior_sweep(x, prior, {"mean_precision_prior": [1.0]}, weight_threshold=1.5)
    bad_start = GMMParams(start.weights, start.means, start.covariances[0])
    with pytest.raises(ValueError, match="init_params must have shapes"):
        prior_sweep(x, prior, {"mean_precision_prior": [1.0]}, init_params=bad_start)
    assert set(check_grid({"covariance_prior_scale": [2.0], "mean_precision_prior": [1.0]},
                          2)) == {"mean_precision_prior", "covariance_prior_scale"}
    assert HYPERPARAMETERS[0] == "weight_concentration_prior"


# --------------------------------------------------------------------------------------
# Power scaling


def _random_theta(rng, k, d, covariance_type):
    weights = rng.dirichlet(np.full(k, 2.0))
    means = rng.normal(size=(k, d))
    a = rng.normal(size=(k, d, d))
    full = a @ np.swapaxes(a, 1, 2) + np.eye(d)
    covariances = {"full": full, "tied": full[0], "diag": rng.uniform(0.5, 2, (k, d)),
                   "spherical": rng.uniform(0.5, 2, k)}[covariance_type]
    return GMMParams(*(jnp.asarray(v, DTYPE) for v in (weights, means, covariances)))


@partial(jax.jit, static_argnums=2)
def _log_priors(thetas, prior, covariance_type):
    prior = GMMPrior(*(jnp.asarray(a, DTYPE) for a in prior))
    return jax.vmap(log_prior, in_axes=(0, None, None))(thetas, prior, covariance_type)


@pytest.mark.parametrize("alpha", [0.5, 1.7])
def test_power_scaled_prior_is_the_prior_to_a_power(covariance_type, alpha):
    rng = np.random.default_rng(0)
    k, d = 3, 2
    # Enough degrees of freedom that the power 0.5 stays a proper prior of every type.
    prior = random_prior(rng, k, d, covariance_type)._replace(
        degrees_of_freedom=np.asarray(d + 8.0))
    scaled = power_scaled_prior(prior, alpha, covariance_type)
    thetas = [_random_theta(rng, k, d, covariance_type) for _ in range(4)]
    thetas = GMMParams(*(jnp.stack(a) for a in zip(*thetas, strict=True)))
    base = np.asarray(_log_priors(thetas, prior, covariance_type), np.float64)
    powered = np.asarray(_log_priors(thetas, scaled, covariance_type), np.float64)
    differences = powered - alpha * base
    # The difference is the log normaliser: the same at every theta.
    np.testing.assert_allclose(differences, differences[0], atol=1e-9 if X64 else 2e-3)
    same = power_scaled_prior(prior, 1.0, covariance_type)
    for a, b in zip(same, prior, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_power_scaled_prior_refuses_improper_powers():
    prior = default_prior(np.random.default_rng(0).normal(size=(20, 2)), 2,
                          weight_concentration_prior=0.5)
    with pytest.raises(ValueError, match="not a proper Dirichlet"):
        power_scaled_prior(prior, 3.0)
    with pytest.raises(ValueError, match="degrees of freedom become"):
        power_scaled_prior(prior, 0.1)
    with pytest.raises(ValueError, match="alpha must be"):
        power_scaled_prior(prior, -1.0)


def test_cjs_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=2000)
    assert cjs_distance(a, a) == 0.0
    near = cjs_distance(a, rng.normal(size=2000))
    far = cjs_distance(a, rng.normal(1.0, size=2000))
    assert 0 < near < 0.05 < far < 1
    assert cjs_distance(a, a + 1.0) == pytest.approx(cjs_distance(a + 1.0, a), rel=1e-12)


@pytest.fixture(scope="module")
def refits():
    x = two_clusters(n=(45, 30))
    prior = default_prior(x, K)
    params, _ = fit_map(jax.random.key(0), x, prior)
    table = refit_check(jax.random.key(1), x, prior, params, num_chains=2, num_warmup=100,
                        num_samples=400)
    return x, prior, params, table


def test_refit_check_agrees_with_psense(refits):
    *_, table = refits
    assert list(table.columns) == ["psense", "refit", "noise", "mean_shift",
                                   "psense_sensitive", "refit_sensitive", "agree"]
    assert table.index[0] == "weights[0]" and table.index[-1] == "covariances[1, 1, 1]"
    assert np.all(np.isfinite(table[["psense", "refit", "noise"]]))
    # psense's local estimate and the exact reruns measure the same quantity.
    assert np.abs(table["psense"] - table["refit"]).max() < 0.05
    # Wherever psense is clearly on one side of the threshold, the reruns say the same.
    clear = (table["psense"] < 0.025) | (table["psense"] > 0.1)
    assert clear.sum() >= len(table) // 2  # so that the check below says something
    assert table.loc[clear, "agree"].all()
    # The default covariance prior is informative at this size; the means are not.
    assert table.filter(like="covariances[0, 0, 0]", axis=0)["refit_sensitive"].all()
    assert not table.filter(like="means", axis=0)["refit_sensitive"].any()
    assert 0 <= table.attrs["agreement"] <= 1


def test_power_scaling_sensitivity_needs_the_groups():
    draws = xr.Dataset({"weights": (("chain", "draw", "component"), np.ones((2, 8, K)))})
    log_prior_group = xr.Dataset({"weights": (("chain", "draw"), np.zeros((2, 8)))})
    tree = xr.DataTree.from_dict({"posterior": draws, "log_prior": log_prior_group})
    with pytest.raises(ValueError, match="log_likelihood"):
        power_scaling_sensitivity(tree)
    with pytest.raises(TypeError, match="DataTree"):
        power_scaling_sensitivity({"posterior": None})


# --------------------------------------------------------------------------------------
# Figures


def test_is_geometric():
    assert plots.is_geometric(np.geomspace(0.01, 10, 4))
    assert not plots.is_geometric([1.0, 2.0, 3.0])
    assert plots.is_geometric([0.1, 10.0]) and not plots.is_geometric([1.0, 2.0])
    assert not plots.is_geometric([0.0, 1.0, 10.0])


def test_sweep_figures(data, crossed):
    x, prior, start = data
    ds = prior_sweep(x, prior, {"weight_concentration_prior": np.geomspace(0.01, 10, 4)},
                     init_params=start)
    fig = plots.sweep_figure(ds, quantities=("weights", "means", "log_posterior"))
    axes = fig.axes
    assert len(axes) == 3
    assert all(ax.get_xscale() == "log" for ax in axes)
    assert len([line for line in axes[0].lines if line.get_gid() == "weights"]) == K
    assert len([line for line in axes[1].lines if line.get_gid() == "means"]) == K * 2
    assert len(axes[2].lines) == 1

    # Crossed grid: a column per hyperparameter, a series per value of the other one.
    fig = plots.sweep_figure(crossed, quantities=("weights", "n_effective_components"))
    assert len(fig.axes) == 4
    assert len(fig.axes[0].lines) == K * 2
    assert fig.axes[0].get_xscale() == "linear"

    fig = plots.effective_components_figure(ds)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len([line for line in ax.lines if line.get_gid() == "n_effective"]) == 1
    with pytest.raises(ValueError, match="was not swept over 'weight_concentration_prior'"):
        plots.effective_components_figure(
            crossed.assign_attrs(hyperparameters='["mean_precision_prior"]'))
    with pytest.raises(ValueError, match="quantities must be among"):
        plots.sweep_figure(ds, quantities=("weight",))
