"""The posterior DataTree, label alignment and the MAP-versus-posterior tables.

Draws are synthetic (no sampler): Gaussian perturbations of a parameter set, permuted
where a test needs label switching, so that every expected number is known or can be
recomputed with NumPy on the very same draws.
"""

import json
import types

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import reference
import xarray as xr
from conftest import DTYPE, EPS, X64, two_clusters

from bayes_gmm import GMMParams, default_prior, e_step, fit_map, log_posterior
from bayes_gmm import diagnostics as dg
from bayes_gmm.em import log_prior as em_log_prior

SAMPLE_DIMS = ("chain", "draw")
COVARIANCE_DIMS = {
    "full": ("component", "feature", "feature_bis"),
    "tied": ("feature", "feature_bis"),
    "diag": ("component", "feature"),
    "spherical": ("component",),
}
# float32 log densities differ from a float64 reference by a few eps of their size.
LOG_DENSITY_RTOL = 1e-10 if X64 else 2e-5


def synthetic_draws(rng, centre: GMMParams, covariance_type, n_chains, n_draws, scale=0.03):
    """Draws scattered around ``centre``: Dirichlet weights, Gaussian means, and
    covariances ``L (I + scale E)(I + scale E)' L'`` (positive definite by construction)."""
    weights, means, covariances = (np.asarray(a, np.float64) for a in centre)
    lead = (n_chains, n_draws)
    w = rng.dirichlet(weights / scale**2, size=lead)
    m = means + scale * rng.normal(size=lead + means.shape)
    if covariance_type in ("full", "tied"):
        d = means.shape[-1]
        chol = np.linalg.cholesky(covariances)
        a = np.eye(d) + scale * rng.normal(size=lead + covariances.shape)
        factor = chol @ a
        c = factor @ np.swapaxes(factor, -1, -2)
    else:
        c = covariances * np.exp(scale * rng.normal(size=lead + covariances.shape))
    return GMMParams(*(np.asarray(v, DTYPE) for v in (w, m, c)))


def as_params(params, dtype=DTYPE):
    return GMMParams(*(np.asarray(a, dtype) for a in params))


@pytest.fixture(scope="module")
def data():
    return two_clusters(seed=3, n=(60, 40), d=2)


def make_tree(x, covariance_type, *, seed=0, n_chains=2, n_draws=40, align=True, **kwargs):
    rng = np.random.default_rng(seed)
    k, d = 2, x.shape[1]
    prior = default_prior(x, k, covariance_type)
    centre = as_params(reference.random_params(rng, k, d, covariance_type))
    draws = synthetic_draws(rng, centre, covariance_type, n_chains, n_draws)
    stats = {"diverging": rng.random((n_chains, n_draws)) < 0.1,
             "accept_prob": rng.uniform(0.5, 1.0, (n_chains, n_draws)).astype(DTYPE)}
    tree = dg.to_datatree(
        draws, x=x, prior=prior, covariance_type=covariance_type, method="synthetic",
        map_params=centre, map_info={"n_iter": np.int32(7), "converged": True,
                                     "log_posterior": np.float32(-1.5)},
        sample_stats=stats, align=align, **kwargs,
    )
    return tree, draws, centre, prior


@pytest.fixture(scope="module", params=("full", "tied", "diag", "spherical"))
def built(request, data):
    covariance_type = request.param
    tree, draws, centre, prior = make_tree(
        data, covariance_type, feature_names=["height", "width"],
        attrs={"sampling_time": 2.5, "seed": 3, "dense_mass": False},
    )
    return covariance_type, tree, draws, centre, prior


# --------------------------------------------------------------------------------------
# Layout


def test_datatree_layout(built, data):
    covariance_type, tree, draws, centre, prior = built
    n_chains, n_draws, k = draws.weights.shape
    n, d = data.shape
    assert set(tree.children) == {"posterior", "sample_stats", "log_likelihood", "log_prior",
                                  "observed_data", "map"}

    posterior = tree["posterior"]
    assert posterior["weights"].dims == (*SAMPLE_DIMS, "component")
    assert posterior["means"].dims == (*SAMPLE_DIMS, "component", "feature")
    assert posterior["covariances"].dims == SAMPLE_DIMS + COVARIANCE_DIMS[covariance_type]
    assert posterior["covariances"].shape == draws.covariances.shape
    assert posterior["means"].dtype == DTYPE
    np.testing.assert_array_equal(posterior["chain"], np.arange(n_chains))
    np.testing.assert_array_equal(posterior["draw"], np.arange(n_draws))
    np.testing.assert_array_equal(posterior["component"], np.arange(k))
    assert list(posterior["feature"].values) == ["height", "width"]
    if "feature_bis" in posterior.dims:
        assert list(posterior["feature_bis"].values) == ["height", "width"]
    assert not any("_dim_" in str(dim) for node in tree.subtree for dim in node.dims)

    stats = tree["sample_stats"]
    assert {"lp", "log_likelihood", "diverging", "acceptance_rate"} <= set(stats.data_vars)
    assert stats["lp"].dims == SAMPLE_DIMS and stats["lp"].dtype == np.float64
    assert stats["diverging"].dtype == bool
    assert tree["log_likelihood"]["x"].dims == (*SAMPLE_DIMS, "obs_id")
    assert tree["log_likelihood"]["x"].shape == (n_chains, n_draws, n)
    assert tree["observed_data"]["x"].dims == ("obs_id", "feature")
    np.testing.assert_array_equal(tree["observed_data"]["x"], data)

    log_prior = tree["log_prior"]
    assert set(log_prior.data_vars) == {"weights", "means", "covariances"}
    assert log_prior["weights"].dims == SAMPLE_DIMS
    assert log_prior["means"].dims == (*SAMPLE_DIMS, "component")
    expected = SAMPLE_DIMS if covariance_type == "tied" else (*SAMPLE_DIMS, "component")
    assert log_prior["covariances"].dims == expected

    map_group = tree["map"]
    for name in ("weights", "means", "covariances"):
        assert map_group[name].dims == posterior[name].dims[2:]
        np.testing.assert_array_equal(map_group[name], getattr(centre, name))
    assert int(map_group["n_iter"]) == 7 and bool(map_group["converged"])
    assert map_group["lp"].dims == () and np.isfinite(float(map_group["lp"]))

    attrs = tree.attrs
    assert attrs["covariance_type"] == covariance_type and attrs["method"] == "synthetic"
    assert attrs["n_components"] == k and attrs["n_features"] == d
    assert attrs["n_observations"] == n
    assert attrs["sampling_time"] == 2.5 and attrs["dense_mass"] == 0
    assert attrs["bayes_gmm_version"] and attrs["created_at"]
    assert attrs["aligned"] == 1 and attrs["alignment_pivot"] == "map"
    assert set(json.loads(attrs["prior_hyperparameters"])) == set(prior._fields)
    for got, want in zip(dg.prior_from_datatree(tree), prior, strict=True):
        np.testing.assert_array_equal(got, want)


def test_log_likelihood_group_is_e_step_per_point(built, data):
    covariance_type, tree, _, _, _ = built
    draws = dg.draws_from_datatree(tree)
    pointwise = tree["log_likelihood"]["x"].transpose(*SAMPLE_DIMS, "obs_id").values
    for chain, draw in [(0, 0), (1, 17)]:
        params = GMMParams(*(jnp.asarray(a[chain, draw]) for a in draws))
        expected = np.asarray(e_step(jnp.asarray(data), params, covariance_type)[1])
        np.testing.assert_allclose(pointwise[chain, draw], expected, rtol=4 * EPS, atol=0)
        np.testing.assert_allclose(
            pointwise[chain, draw],
            reference.e_step(data, [a[chain, draw] for a in draws], covariance_type)[1],
            rtol=LOG_DENSITY_RTOL,
        )
    np.testing.assert_allclose(tree["sample_stats"]["log_likelihood"],
                               pointwise.sum(-1, dtype=np.float64), rtol=1e-12)


def test_log_prior_group_sums_to_the_prior_and_lp_to_the_posterior(built, data):
    covariance_type, tree, _, _, prior = built
    draws = dg.draws_from_datatree(tree)
    log_prior = tree["log_prior"]
    total = sum(da.sum([dim for dim in da.dims if dim not in SAMPLE_DIMS])
                for da in log_prior.data_vars.values()).transpose(*SAMPLE_DIMS).values
    lp = tree["sample_stats"]["lp"].transpose(*SAMPLE_DIMS).values
    for chain, draw in [(0, 3), (1, 39)]:
        params = [a[chain, draw] for a in draws]
        np.testing.assert_allclose(total[chain, draw],
                                   reference.log_prior(params, prior, covariance_type),
                                   rtol=LOG_DENSITY_RTOL)
        np.testing.assert_allclose(lp[chain, draw],
                                   reference.log_posterior(data, params, prior, covariance_type),
                                   rtol=LOG_DENSITY_RTOL)


def test_power_scaling_reads_the_log_prior_group(data):
    tree, *_ = make_tree(data, "full", n_chains=2, n_draws=100)
    sensitivity = arviz_stats.psense(tree, group="prior")
    assert set(sensitivity.data_vars) == {"weights", "means", "covariances"}
    assert np.all(np.isfinite(sensitivity["means"]))


def test_map_dead_component_keeps_a_finite_log_posterior(data):
    # A dead MAP component (weight exactly 0, possible when alpha < 1) has left the model:
    # its log posterior is em.log_posterior's, not the NumPyro density's (+inf).
    rng = np.random.default_rng(1)
    centre = as_params(reference.random_params(rng, 3, 2, "diag"))
    centre = centre._replace(weights=np.asarray([0.7, 0.3, 0.0], DTYPE))
    prior = default_prior(data, 3, "diag", weight_concentration_prior=0.5)
    draws = synthetic_draws(rng, centre._replace(weights=np.asarray([0.7, 0.2, 0.1])),
                            "diag", 1, 5)
    tree = dg.to_datatree(draws, x=data, prior=prior, covariance_type="diag", method="t",
                          map_params=centre)
    expected = float(log_posterior(jnp.asarray(data), GMMParams(*map(jnp.asarray, centre)),
                                   prior, "diag"))
    np.testing.assert_allclose(float(tree["map"]["lp"]), expected, rtol=LOG_DENSITY_RTOL)


# --------------------------------------------------------------------------------------
# Saving and loading


def test_save_load_round_trip_is_identical(built, tmp_path):
    pytest.importorskip("h5py", reason="h5netcdf needs h5py to write HDF5: depend on "
                        "h5netcdf[h5py]")
    tree = built[1]
    path = dg.save_datatree(tree, tmp_path / "posterior.nc")
    assert [p.name for p in tmp_path.iterdir()] == ["posterior.nc"]
    loaded = dg.load_datatree(path)
    assert loaded.identical(tree)
    assert loaded["map"].identical(tree["map"])
    assert loaded["sample_stats"]["diverging"].dtype == bool


def test_round_trip_of_an_unaligned_tree_with_default_coordinates(data, tmp_path):
    pytest.importorskip("h5py", reason="h5netcdf needs h5py to write HDF5: depend on "
                        "h5netcdf[h5py]")
    tree, *_ = make_tree(data, "spherical", align=False)
    loaded = dg.load_datatree(dg.save_datatree(tree, tmp_path / "p.nc"))
    assert loaded.identical(tree)
    assert loaded.attrs["aligned"] == 0


def test_load_missing_file_names_it(tmp_path):
    path = tmp_path / "nowhere.nc"
    with pytest.raises(FileNotFoundError, match="nowhere.nc"):
        dg.load_datatree(path)


def test_load_file_that_is_not_hdf5_names_it(tmp_path):
    path = tmp_path / "garbage.nc"
    path.write_bytes(b"this is not a netCDF file at all")
    with pytest.raises(OSError, match="garbage.nc.*not a netCDF4/HDF5 file"):
        dg.load_datatree(path)
    path.write_bytes(b"")
    with pytest.raises(OSError, match="garbage.nc"):
        dg.load_datatree(path)


def test_load_truncated_file_names_it(built, tmp_path):
    pytest.importorskip("h5py", reason="h5netcdf needs h5py to write HDF5: depend on "
                        "h5netcdf[h5py]")
    path = dg.save_datatree(built[1], tmp_path / "cut.nc")
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(OSError, match="cut.nc.*truncated"):
        dg.load_datatree(path)


def test_failed_save_leaves_the_old_file_and_no_temporary(built, tmp_path, monkeypatch):
    path = tmp_path / "posterior.nc"
    path.write_bytes(b"previous results")
    monkeypatch.setattr(dg, "_require_h5py", lambda action: None)

    class Broken(xr.DataTree):
        def to_netcdf(self, filepath, **kwargs):
            with open(filepath, "wb") as file:
                file.write(b"half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        dg.save_datatree(Broken.from_dict({}), path)
    assert path.read_bytes() == b"previous results"
    assert [p.name for p in tmp_path.iterdir()] == ["posterior.nc"]


def test_save_into_a_missing_folder_says_so(built, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dg.save_datatree(built[1], tmp_path / "no" / "p.nc")


# --------------------------------------------------------------------------------------
# Alignment


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_permuted_copies_of_the_pivot_come_back_identical(covariance_type):
    rng = np.random.default_rng(7)
    k, d, n_chains, n_draws = 4, 3, 3, 25
    pivot = as_params(reference.random_params(rng, k, d, covariance_type))
    shuffles = np.argsort(rng.random((n_chains, n_draws, k)), axis=-1)
    shuffles[0, 0] = np.arange(k)  # one draw needs no relabelling
    copies = GMMParams(*(np.broadcast_to(a, (n_chains, n_draws, *a.shape)) for a in pivot))
    draws = dg.permute_components(copies, shuffles, covariance_type)

    aligned, permutations = dg.align_to_pivot(draws, pivot, covariance_type)
    for got, want in zip(aligned, pivot, strict=True):
        np.testing.assert_array_equal(got, np.broadcast_to(want, got.shape))
        assert got.dtype == DTYPE
    # draws[..., shuffles[k]] = pivot[k], so pivot label k is the draw's argsort(shuffles)[k].
    np.testing.assert_array_equal(permutations, np.argsort(shuffles, axis=-1))
    assert permutations.shape == (n_chains, n_draws, k) and permutations.dtype == np.int64
    relabelled = np.mean(np.any(shuffles != np.arange(k), axis=-1))
    assert dg.relabelled_fraction(permutations) == pytest.approx(relabelled)
    if covariance_type == "tied":
        assert aligned.covariances.shape == (n_chains, n_draws, d, d)


def test_alignment_separates_components_by_covariance_and_weight():
    # Two components with one mean: only the covariance (and weight) terms of the cost
    # can tell them apart; a means-only distance could not.
    pivot = GMMParams(np.array([0.7, 0.3]), np.zeros((2, 2)),
                      np.stack([np.eye(2) * 0.2, np.eye(2) * 5.0]))
    swapped = GMMParams(*(a[None, None, ::-1] for a in pivot))
    aligned, permutations = dg.align_to_pivot(swapped, pivot, "full")
    np.testing.assert_array_equal(permutations[0, 0], [1, 0])
    np.testing.assert_array_equal(aligned.covariances[0, 0], pivot.covariances)


def test_alignment_undoes_label_switching_between_chains(data):
    # Chains 1 and 3 visit the mirror mode (components swapped): R-hat of every
    # component-wise parameter is far from 1 until the draws are aligned to the MAP.
    rng = np.random.default_rng(11)
    prior = default_prior(data, 2, "full")
    pivot = GMMParams(np.array([0.6, 0.4], DTYPE), np.array([[0.0, 0.0], [5.0, 5.0]], DTYPE),
                      np.stack([np.eye(2), 0.5 * np.eye(2)]).astype(DTYPE))
    draws = synthetic_draws(rng, pivot, "full", 4, 500, scale=0.05)
    swap = np.zeros((4, 500, 2), np.int64) + np.arange(2)
    swap[[1, 3]] = [1, 0]
    switched = dg.permute_components(draws, swap, "full")
    tree = dg.to_datatree(switched, x=data, prior=prior, covariance_type="full",
                          method="synthetic", map_params=pivot, align=False)

    raw = arviz_stats.rhat(tree, var_names=["means", "weights"])
    # Rank-normalised R-hat saturates near 1.73 for two chains in each of two modes.
    assert float(raw["means"].min()) > 1.5 and float(raw["weights"].min()) > 1.5

    aligned = dg.align_datatree(tree)
    assert aligned.attrs["aligned"] == 1
    assert aligned.attrs["relabelled_fraction"] == pytest.approx(0.5)
    np.testing.assert_array_equal(aligned["sample_stats"]["label_permutation"], swap)
    rhat = arviz_stats.rhat(aligned)
    for name in ("weights", "means", "covariances"):
        assert float(rhat[name].max()) < 1.01, name
    np.testing.assert_array_equal(aligned["posterior"]["means"], draws.means)
    # The per-component log prior follows its component; the label-invariant groups stay.
    np.testing.assert_array_equal(
        aligned["log_prior"]["means"].values,
        np.take_along_axis(tree["log_prior"]["means"].values, swap, axis=-1))
    assert aligned["log_likelihood"].identical(tree["log_likelihood"])

    table = dg.diagnostics_table(tree)  # aligns internally
    assert table["r_hat"].max() < 1.01
    assert table.attrs["aligned"] and table.attrs["relabelled_fraction"] == pytest.approx(0.5)
    # Aligning an aligned tree again changes nothing and keeps the total permutation.
    again = dg.align_datatree(aligned)
    assert again.attrs["relabelled_fraction"] == pytest.approx(0.5)
    assert again["posterior"].identical(aligned["posterior"])
    np.testing.assert_array_equal(again["sample_stats"]["label_permutation"], swap)


def test_alignment_reports_a_bad_draw():
    pivot = as_params(reference.random_params(np.random.default_rng(0), 2, 2, "diag"))
    draws = GMMParams(*(np.broadcast_to(a, (2, 3, *a.shape)).copy() for a in pivot))
    draws.means[1, 2, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"chain=1, draw=2"):
        dg.align_to_pivot(draws, pivot, "diag")


def test_label_invariant_summaries(data):
    tree, draws, _, _ = make_tree(data, "diag", align=False)
    summaries = dg.label_invariant_summaries(tree, weight_threshold=0.35)
    weights = draws.weights
    np.testing.assert_array_equal(summaries["sorted_weights"], -np.sort(-weights, axis=-1))
    np.testing.assert_array_equal(summaries["n_occupied"], np.sum(weights > 0.35, axis=-1))
    np.testing.assert_array_equal(summaries["lp"], tree["sample_stats"]["lp"])
    default = dg.label_invariant_summaries(tree)  # threshold 1 / N: both occupied
    assert np.all(default["n_occupied"] == 2)
    aligned = dg.label_invariant_summaries(dg.align_datatree(tree), weight_threshold=0.35)
    assert aligned.identical(summaries)

    occupied = np.ones(weights.shape[:2], np.int64)
    gibbs = dg.to_datatree(draws, x=data, prior=dg.prior_from_datatree(tree),
                           covariance_type="diag", method="gibbs",
                           sample_stats={"occupied": occupied})
    np.testing.assert_array_equal(dg.label_invariant_summaries(gibbs)["n_occupied"], occupied)


# --------------------------------------------------------------------------------------
# Tables


def test_diagnostics_table(built):
    covariance_type, tree, draws, _, _ = built
    table = dg.diagnostics_table(tree)
    assert list(table.columns) == ["r_hat", "ess_bulk", "ess_tail"]
    k, d = draws.means.shape[-2:]
    n_cov = {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d,
             "spherical": k}[covariance_type]
    assert len(table) == k + k * d + n_cov + 2 + k
    assert table.index[0] == "weights[0]"
    assert table.index[-k - 2:].tolist() == ["lp", "log_likelihood"] + [
        f"sorted_weights[{r}]" for r in range(k)]
    largest = np.max(draws.weights, axis=-1)  # label invariant: no alignment involved
    expected_largest = arviz_stats.rhat(np.asarray(largest, np.float64))
    assert table.loc["sorted_weights[0]", "r_hat"] == pytest.approx(float(expected_largest))
    assert "means[1, width]" in table.index
    expected = arviz_stats.rhat(tree, var_names=["means"]).sel(component=1, feature="width")
    assert table.loc["means[1, width]", "r_hat"] == pytest.approx(float(expected["means"]))
    assert table.attrs["n_divergences"] == int(tree["sample_stats"]["diverging"].sum())
    assert table.attrs["sampling_time"] == 2.5
    assert (table.attrs["n_chains"], table.attrs["n_draws"]) == draws.weights.shape[:2]


def hdi_numpy(values, prob):
    """The shortest interval between two order statistics holding ``floor(prob n)`` steps."""
    s = np.sort(values.ravel())
    n = len(s)
    steps = min(int(np.floor(prob * n)), n - 1)
    i = int(np.argmin(s[steps:] - s[: n - steps]))
    return s[i], s[i + steps]


@pytest.fixture(scope="module")
def fitted(data):
    prior = default_prior(data, 2, "full")
    params, info = fit_map(jax.random.key(0), data, prior, covariance_type="full", tol=1e-8)
    return as_params(params), info, prior


def test_compare_map_posterior_against_numpy(data, fitted):
    map_params, info, prior = fitted
    rng = np.random.default_rng(5)
    draws = synthetic_draws(rng, map_params, "full", 3, 200)
    tree = dg.to_datatree(draws, x=data, prior=prior, covariance_type="full", method="t",
                          map_params=map_params, map_info=info)
    assert tree.attrs["relabelled_fraction"] == 0

    table = dg.compare_map_posterior(map_params, tree, hdi_prob=0.89)
    assert list(table.columns) == ["map", "mean", "sd", "median", "hdi_lower", "hdi_upper",
                                   "map_in_hdi", "z", "r_hat", "ess_bulk", "ess_tail",
                                   "frac_draws_above_map"]
    assert len(table) == 2 + 4 + 6 + 1  # weights, means, upper triangles, lp
    assert "covariances[0, 1, 0]" not in table.index
    for label, draw_values, map_value in [
        ("weights[1]", draws.weights[..., 1], map_params.weights[1]),
        ("means[0, 1]", draws.means[..., 0, 1], map_params.means[0, 1]),
        ("covariances[1, 0, 1]", draws.covariances[..., 1, 0, 1], map_params.covariances[1, 0, 1]),
    ]:
        row = table.loc[label]
        v = np.asarray(draw_values, np.float64)
        assert row["map"] == pytest.approx(float(map_value), rel=1e-12)
        assert row["mean"] == pytest.approx(v.mean(), rel=1e-12)
        assert row["sd"] == pytest.approx(v.std(ddof=1), rel=1e-12)
        assert row["median"] == pytest.approx(np.median(v), rel=1e-12)
        lower, upper = hdi_numpy(v, 0.89)
        assert (row["hdi_lower"], row["hdi_upper"]) == (lower, upper)
        assert row["map_in_hdi"] == (lower <= map_value <= upper)
        assert row["z"] == pytest.approx((float(map_value) - v.mean()) / v.std(ddof=1))
    assert table["map_in_hdi"].iloc[:-1].all()  # draws scattered around the MAP

    lp_row = table.loc["lp"]
    lp = tree["sample_stats"]["lp"].values
    expected_map_lp = float(log_posterior(jnp.asarray(data), GMMParams(*map(jnp.asarray,
                                                                            map_params)),
                                          prior, "full"))
    assert lp_row["map"] == pytest.approx(expected_map_lp, rel=LOG_DENSITY_RTOL)
    assert lp_row["mean"] == pytest.approx(lp.mean(), rel=1e-12)
    assert (lp_row["hdi_lower"], lp_row["hdi_upper"]) == hdi_numpy(lp, 0.89)
    # The MAP is the mode: no draw has a higher log posterior.
    assert lp_row["frac_draws_above_map"] == 0.0
    assert not lp_row["map_in_hdi"]  # the mode lies above the bulk of lp
    assert table["frac_draws_above_map"].iloc[:-1].isna().all()


def test_compare_map_posterior_flags_a_map_outside_the_posterior(data, fitted):
    map_params, _, prior = fitted
    rng = np.random.default_rng(6)
    draws = synthetic_draws(rng, map_params, "full", 2, 100)
    tree = dg.to_datatree(draws, x=data, prior=prior, covariance_type="full", method="t",
                          map_params=map_params)
    shifted = map_params._replace(means=map_params.means + np.array([[0.5, 0.0], [0.0, 0.0]],
                                                                   DTYPE))
    table = dg.compare_map_posterior(shifted, tree)
    sd = table.loc["means[0, 0]", "sd"]
    assert not table.loc["means[0, 0]", "map_in_hdi"]
    assert table.loc["means[0, 0]", "z"] == pytest.approx(
        (float(shifted.means[0, 0]) - table.loc["means[0, 0]", "mean"]) / sd)
    assert table.loc["means[0, 0]", "z"] > 5
    assert table.loc["means[1, 1]", "map_in_hdi"]
    lp = tree["sample_stats"]["lp"].values
    lp_row = table.loc["lp"]
    assert lp_row["frac_draws_above_map"] == pytest.approx(np.mean(lp > lp_row["map"]))
    assert lp_row["frac_draws_above_map"] > 0.5  # a non-mode: most draws beat it

    # A fitted estimator works in place of GMMParams; None takes the tree's map group.
    estimator = types.SimpleNamespace(params_=map_params, covariance_type="full")
    by_estimator = dg.compare_map_posterior(estimator, tree)
    by_tree = dg.compare_map_posterior(None, tree)
    pd.testing.assert_frame_equal(by_estimator, by_tree)
    wrong = types.SimpleNamespace(params_=map_params, covariance_type="diag")
    with pytest.raises(ValueError, match="covariance_type='diag'"):
        dg.compare_map_posterior(wrong, tree)


def test_compare_map_posterior_aligns_a_switched_tree(data, fitted):
    map_params, _, prior = fitted
    rng = np.random.default_rng(8)
    draws = synthetic_draws(rng, map_params, "full", 2, 100)
    swap = np.zeros((2, 100, 2), np.int64) + np.arange(2)
    swap[1] = [1, 0]
    tree = dg.to_datatree(dg.permute_components(draws, swap, "full"), x=data, prior=prior,
                          covariance_type="full", method="t", map_params=map_params,
                          align=False)
    table = dg.compare_map_posterior(map_params, tree)
    assert table.loc["means[0, 0]", "mean"] == pytest.approx(draws.means[..., 0, 0].mean())
    assert table["r_hat"].max() < 1.05
    assert table.attrs["relabelled_fraction"] == pytest.approx(0.5)
    assert tree.attrs["aligned"] == 0  # the caller's tree is not modified


# --------------------------------------------------------------------------------------
# Messages


def test_messages_name_what_is_wrong(data):
    rng = np.random.default_rng(0)
    prior = default_prior(data, 2, "full")
    centre = as_params(reference.random_params(rng, 2, 2, "full"))
    draws = synthetic_draws(rng, centre, "full", 2, 5)
    kwargs = dict(x=data, prior=prior, covariance_type="full", method="t")
    with pytest.raises(ValueError, match=r"draws.weights must have shape \(n_chains"):
        dg.to_datatree(GMMParams(draws.weights[0], draws.means, draws.covariances), **kwargs)
    with pytest.raises(ValueError, match=r"draws.covariances must have shape \(2, 5, 2, 2, 2\)"):
        dg.to_datatree(draws._replace(covariances=draws.covariances[..., 0]), **kwargs)
    with pytest.raises(ValueError, match=r"sample_stats\['diverging'\] must have shape"):
        dg.to_datatree(draws, sample_stats={"diverging": np.zeros(10, bool)}, **kwargs)
    with pytest.raises(ValueError, match="feature_names must be 2 distinct names"):
        dg.to_datatree(draws, feature_names=["a"], **kwargs)
    with pytest.raises(ValueError, match="prior does not match"):
        dg.to_datatree(draws, **{**kwargs, "prior": default_prior(data, 3, "full")})
    with pytest.raises(ValueError, match="covariance_type"):
        dg.to_datatree(draws, **{**kwargs, "covariance_type": "banded"})
    with pytest.raises(ValueError, match=r"pivot must have weights, means and covariances"):
        dg.align_to_pivot(draws, GMMParams(*(a[:1] for a in centre)), "full")
    with pytest.raises(ValueError, match="no 'map' group"):
        dg.align_datatree(dg.to_datatree(draws, **kwargs))
    with pytest.raises(ValueError, match="hdi_prob"):
        dg.compare_map_posterior(centre, dg.to_datatree(draws, map_params=centre, **kwargs),
                                 hdi_prob=1.5)


def test_sampler_lp_is_replaced_by_the_natural_log_posterior(data):
    tree, draws, centre, prior = make_tree(data, "tied", n_draws=4)
    bogus = dg.to_datatree(draws, x=data, prior=prior, covariance_type="tied", method="t",
                           map_params=centre, sample_stats={"lp": np.zeros((2, 4))})
    np.testing.assert_array_equal(bogus["sample_stats"]["lp"], tree["sample_stats"]["lp"])


def test_without_the_pointwise_group_the_totals_remain(data):
    tree, draws, centre, prior = make_tree(data, "diag", n_draws=6)
    small = dg.to_datatree(draws, x=data, prior=prior, covariance_type="diag", method="t",
                           map_params=centre, log_likelihood=False)
    assert "log_likelihood" not in small.children
    xr.testing.assert_equal(small["sample_stats"].to_dataset(),
                            tree["sample_stats"].to_dataset().drop_vars(["diverging",
                                                                         "acceptance_rate"]))
    table = dg.diagnostics_table(small)
    assert "log_likelihood" in table.index


def test_em_log_prior_matches_the_model_sites_used_for_draws(built):
    # The map group's lp uses em.log_prior; draws' lp the NumPyro sites. Same density.
    covariance_type, tree, _, centre, prior = built
    params = GMMParams(*map(jnp.asarray, centre))
    value = float(em_log_prior(params, prior, covariance_type))
    np.testing.assert_allclose(value, reference.log_prior(centre, prior, covariance_type),
                               rtol=LOG_DENSITY_RTOL)
