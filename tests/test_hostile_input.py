"""Hostile input: one table of bad inputs across the layers and the error each must give.

Every row is (case id, a callable that feeds the bad input, the exception type, a regex
of its message). The callables go through the public boundary of each layer: the
estimator, the pure core's static checks, the prior builder, the posterior entry
point, the posterior file reader, the config loader and the command line. What is
checked is that each gets *its* error, with a message that names the problem, rather
than a traceback from deep inside JAX, NumPy or h5py. Inputs that are odd but valid
(duplicated points, a constant column, D > N, scales of 1e-150 and 1e150) must fit, or
say why they cannot; an interrupted write must leave nothing that looks complete.
"""

import json
import re
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import X64, two_clusters

from bayes_gmm import BayesianGMM, GMMParams, default_prior, diagnostics, experiment, fit_map
from bayes_gmm import gibbs as gibbs_module
from bayes_gmm.cli import main
from bayes_gmm.config import ConfigError, load_config, parse_config
from bayes_gmm.posterior import draw

X = two_clusters(0, n=(15, 15)).astype(np.float64)  # 30 x 2
PRIOR = default_prior(X, 2)
START = GMMParams(jnp.array([0.5, 0.5]), jnp.zeros((2, 2)), jnp.stack([jnp.eye(2)] * 2))


def fit(x=X, **kwargs):
    return lambda: BayesianGMM(**{"n_components": 2, "random_state": 0, **kwargs}).fit(x)


def with_value(x, row, col, value):
    x = np.array(x, dtype=object if isinstance(value, str) else np.float64)
    x[row, col] = value
    return x


def config_table(**sections):
    """A valid minimal config as a dict, with sections replaced or extended."""
    table = {"name": "hostile", "data": {"source": "synthetic", "n_samples": 40},
             "model": {"n_components": 2}}
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(table.get(name), dict):
            table[name] = {**table[name], **value}
        else:
            table[name] = value
    return lambda: parse_config(table)


def cli_run(tmp, text, *extra):
    config = tmp / "c.toml"
    config.write_text(textwrap.dedent(text))
    return main(["run", str(config), "--output-dir", str(tmp / "out"), "--quiet", *extra])


CASES = [
    # ---- the estimator: data
    ("nan", fit(with_value(X, 2, 0, np.nan)), ValueError, r"NaN or inf .* row 2, column 0"),
    ("inf", fit(with_value(X, 0, 1, -np.inf)), ValueError, r"infinity \(inf\) at row 0"),
    ("empty", fit(np.empty((0, 2))), ValueError, r"0 sample\(s\)"),
    ("empty list", fit([]), ValueError, r"must be 2-D .* 1-D array of shape \(0,\)"),
    ("scalar", fit(3.0), ValueError, r"must be 2-D .* got 0 dimensions"),
    ("1-d", fit(X[:, 0]), ValueError, r"1-D array .*reshape\(-1, 1\)"),
    ("3-d", fit(X[None]), ValueError, r"got 3 dimensions"),
    ("object with a dict", fit(with_value(X, 0, 0, "x").astype(object)), TypeError,
     r"must be numeric; converting it to float failed"),
    ("strings", fit(X.astype(str)), TypeError, r"dtype <U.* \(text\)"),
    ("complex", fit(X + 0j), ValueError, r"Complex data not supported"),
    ("ragged", fit([[1.0, 2.0], [3.0]]), ValueError,
     r"must be a rectangular 2-D array .* same number of features in every row"),
    ("N < K", fit(X[:3], n_components=4), ValueError,
     r"X has 3 sample\(s\) but n_components=4"),
    # ---- the estimator: hyperparameters of every kind
    ("alpha negative", fit(weight_concentration_prior=-1.0), ValueError,
     r"weight_concentration_prior must be > 0"),
    ("alpha nan", fit(weight_concentration_prior=np.nan), ValueError,
     r"weight_concentration_prior must be finite"),
    ("alpha text", fit(weight_concentration_prior="flat"), TypeError,
     r"weight_concentration_prior must be numeric"),
    ("mean prior inf", fit(mean_prior=[0.0, np.inf]), ValueError, r"mean_prior must be finite"),
    ("mean prior shape", fit(mean_prior=[[0.0, 0.0]]), ValueError,
     r"mean_prior must have shape \(n_features,\) = \(2,\); got shape \(1, 2\)"),
    ("kappa inf", fit(mean_precision_prior=np.inf), ValueError,
     r"mean_precision_prior must be finite"),
    ("kappa array", fit(mean_precision_prior=[1.0, 2.0]), ValueError,
     r"mean_precision_prior must be a single number"),
    ("dof too small", fit(degrees_of_freedom_prior=0.5), ValueError,
     r"degrees_of_freedom_prior must be > n_features - 1 = 1; got 0.5"),
    ("dof text", fit(degrees_of_freedom_prior="four"), TypeError,
     r"degrees_of_freedom_prior must be numeric"),
    ("psi nan", fit(covariance_prior=[[1.0, np.nan], [np.nan, 1.0]]), ValueError,
     r"covariance_prior must be finite"),
    ("psi singular", fit(covariance_prior=np.ones((2, 2))), ValueError,
     r"symmetric positive definite .* smallest eigenvalue"),
    ("psi diag zero", fit(covariance_type="diag", covariance_prior=[1.0, 0.0]), ValueError,
     r"covariance_prior must be > 0 in every feature"),
    ("psi spherical vector", fit(covariance_type="spherical", covariance_prior=[1.0, 1.0]),
     ValueError, r"must be a single number for covariance_type='spherical'"),
    ("n_components bool", fit(n_components=True), TypeError, r"n_components must be an integer"),
    ("tol nan", fit(tol=np.nan), ValueError, r"tol must be a finite number >= 0"),
    ("max_iter float", fit(max_iter=10.5), TypeError, r"max_iter must be an integer"),
    ("keep_history text", fit(keep_history="yes"), TypeError, r"keep_history must be True"),
    ("random_state negative", fit(random_state=-1), ValueError, r"random_state must be in"),
    # ---- the estimator: initial values
    ("weights_init shape", fit(weights_init=[1 / 3] * 3), ValueError,
     r"weights_init must have shape \(n_components,\) = \(2,\)"),
    ("weights_init nan", fit(weights_init=[np.nan, 0.5]), ValueError,
     r"weights_init must be finite"),
    ("means_init shape", fit(means_init=np.zeros((2, 3))), ValueError,
     r"means_init must have shape \(n_components, n_features\) = \(2, 2\); got shape \(2, 3\)"),
    ("covariances_init tied shape",
     fit(covariance_type="tied", covariances_init=np.ones((2, 2, 2))), ValueError,
     r"covariances_init \(covariance_type='tied'\) must have shape"),
    ("covariances_init spherical negative",
     fit(covariance_type="spherical", covariances_init=[1.0, -1.0]), ValueError,
     r"covariances_init must be > 0"),
    # ---- the pure core and the prior builder: static checks at their boundary
    ("fit_map prior of other data", lambda: fit_map(jax.random.key(0), X[:, :1], PRIOR),
     ValueError, r"prior does not match the data .* expected mean of shape \(1,\)"),
    ("fit_map 1-d", lambda: fit_map(jax.random.key(0), X[:, 0], PRIOR), ValueError,
     r"x must be 2-D"),
    ("fit_map init", lambda: fit_map(jax.random.key(0), X, PRIOR, init="kmeans"), ValueError,
     r"init must be one of"),
    ("fit_map covariance_type", lambda: fit_map(jax.random.key(0), X, PRIOR,
                                                covariance_type="diagonal"),
     ValueError, r"covariance_type must be one of"),
    ("gibbs start of other shape", lambda: gibbs_module.sample(
        jax.random.key(0), X, PRIOR, START._replace(means=jnp.zeros((3, 2)))), ValueError,
     r"init_params do not match the data"),
    ("gibbs num_samples 0", lambda: gibbs_module.sample(jax.random.key(0), X, PRIOR, START,
                                                        num_samples=0),
     ValueError, r"num_samples must be an integer >= 1"),
    ("posterior method", lambda: draw(jax.random.key(0), X, PRIOR, START, method="hmc"),
     ValueError, r"method must be one of 'nuts', 'gibbs', 'laplace'; got 'hmc'"),
    ("posterior init_jitter", lambda: draw(jax.random.key(0), X, PRIOR, START,
                                           init_jitter=-1.0),
     ValueError, r"init_jitter must be a finite number >= 0"),
    ("default_prior K text", lambda: default_prior(X, "2"), TypeError,
     r"n_components must be an integer >= 1; got '2'"),
    # ---- the config loader: unknown keys, wrong types
    ("config unknown top key", config_table(sead=1), ConfigError,
     r"unknown key 'sead' .* Did you mean 'seed'"),
    ("config unknown section key", config_table(model={"n_component": 2}), ConfigError,
     r"unknown key 'model.n_component'"),
    ("config string for int", config_table(model={"n_components": "2"}), ConfigError,
     r"model.n_components: expected an integer; got '2' \(a string\)"),
    ("config bool for int", config_table(seed=True), ConfigError,
     r"seed: expected an integer; got True \(a boolean\)"),
    ("config float for bool", config_table(output={"iteration_figures": 1.0}), ConfigError,
     r"output.iteration_figures: expected true or false"),
    ("config section as value", config_table(prior=3), ConfigError, r"prior: expected a table"),
    ("config nan", config_table(model={"tol": float("nan")}), ConfigError,
     r"model.tol: expected a finite number"),
    ("config negative samples", config_table(data={"n_samples": -5}), ConfigError,
     r"data.n_samples: expected an integer >= 1"),
    ("config missing model", lambda: parse_config({"name": "x", "data": {"source": "synthetic"}}),
     ConfigError, r"missing key 'model'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_bad_input_gets_its_error(case):
    _, call, error, message = case
    with pytest.raises(error, match=message) as caught:
        call()
    # Raised at the boundary, by bayes_gmm: not from inside JAX, NumPy or h5py.
    raised_in = str(caught.traceback[-1].path)
    assert "/bayes_gmm/" in raised_in and "site-packages" not in raised_in, raised_in


# --------------------------------------------------------------------------------------
# Odd but valid data: fitted, or refused with the reason


@pytest.mark.filterwarnings("ignore::bayes_gmm.ConvergenceWarning")
@pytest.mark.parametrize("name, x", [  # one shape (12, 3) for two cases: one compilation
    ("duplicated points only", np.ones((12, 3))),
    ("a constant column", np.c_[np.random.default_rng(0).normal(size=(12, 2)), np.full(12, 7.0)]),
    ("D > N", np.random.default_rng(0).normal(size=(3, 5))),
])
def test_degenerate_data_still_fit(name, x):
    gmm = BayesianGMM(2, random_state=0, max_iter=20).fit(x)
    assert all(np.all(np.isfinite(a)) for a in gmm.params_)
    assert np.isfinite(gmm.lower_bound_) and np.all(np.isfinite(gmm.score_samples(x)))


@pytest.mark.parametrize("scale", [1e-150, 1e150])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_huge_and_tiny_scales_fit_after_standardisation_or_say_why(scale, covariance_type):
    x = two_clusters(1, n=(40, 40)).astype(np.float64)
    estimator = BayesianGMM(2, covariance_type=covariance_type, random_state=0)
    if not X64:
        # float32 results cannot hold covariances of ~1e300 or ~1e-300: say so.
        with pytest.raises(ValueError, match=r"cannot be represented in float32, .* "
                           r"Enable float64 \(JAX_ENABLE_X64=1"):
            estimator.fit(x * scale)
        return
    reference = BayesianGMM(2, covariance_type=covariance_type, random_state=0).fit(x)
    gmm = estimator.fit(x * scale)
    order = np.argsort(gmm.means_[:, 0]), np.argsort(reference.means_[:, 0])
    np.testing.assert_allclose(gmm.weights_[order[0]], reference.weights_[order[1]], atol=1e-6)
    np.testing.assert_allclose(gmm.means_[order[0]] / scale, reference.means_[order[1]],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gmm.covariances_[order[0]] / scale**2,
                               reference.covariances_[order[1]], rtol=1e-5, atol=1e-7)
    # Densities of the data in their own units: log p(s x) = log p(x) - D log s.
    np.testing.assert_allclose(gmm.score_samples(x * scale),
                               reference.score_samples(x) - 2 * np.log(scale), rtol=1e-6)
    assert np.all(gmm.predict(x * scale) == np.argsort(order[0])[
        np.argsort(order[1])][reference.predict(x)])
    with pytest.raises(ValueError, match=r"posterior samplers work in the data's own units"):
        gmm.sample_posterior(x * scale, method="gibbs")


@pytest.mark.skipif(not X64, reason="compares with log_posterior in the data's units, "
                    "which float32 cannot evaluate at this scale")
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_standardised_fit_reports_the_log_posterior_of_the_data(covariance_type):
    """The Jacobian of the internal rescaling is accounted for: lower_bound_ is the log
    posterior of the data as given."""
    from bayes_gmm import log_posterior

    x = two_clusters(2, n=(30, 30)).astype(np.float64) * 2.0**20
    gmm = BayesianGMM(2, covariance_type=covariance_type, random_state=0).fit(x)
    assert gmm._data_scale != 1.0
    np.testing.assert_allclose(
        gmm.lower_bound_, float(log_posterior(x, gmm.params_, gmm.prior_, covariance_type)),
        rtol=1e-10)


# --------------------------------------------------------------------------------------
# Files: corrupt posterior files, existing results folders, interrupted writes


@pytest.fixture(scope="module")
def tree():
    """A small tree in the layout of bayes_gmm posteriors (the reader checks the layout,
    not the numbers), built without sampling."""
    import xarray as xr

    rng = np.random.default_rng(0)
    draws = xr.Dataset({"weights": (("chain", "draw", "component"), rng.dirichlet([1, 1], (1, 5))),
                        "means": (("chain", "draw", "component", "feature"),
                                  rng.normal(size=(1, 5, 2, 2)))})
    tree = xr.DataTree.from_dict({"posterior": draws,
                                  "observed_data": xr.Dataset({"x": (("obs_id", "feature"), X)})})
    tree.attrs = {"covariance_type": "full", "method": "gibbs"}
    return tree


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # h5netcdf's
@pytest.mark.parametrize("damage, error, message", [
    ("empty", OSError, r"not a netCDF4/HDF5 file .* empty, truncated"),
    ("truncated", OSError, r"not a complete netCDF4/HDF5 file .* truncated"),
    ("bit flips", OSError, r"not a complete netCDF4/HDF5 file"),
    ("json", OSError, r"first bytes are not the HDF5 signature"),
    ("missing", FileNotFoundError, r"No posterior file at"),
    ("a directory", FileNotFoundError, r"No posterior file at"),
])
def test_corrupt_posterior_files_give_a_clear_error(tree, tmp_path, damage, error, message):
    path = tmp_path / "posterior.nc"
    diagnostics.save_datatree(tree, path)
    content = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(content[: len(content) // 3])
    elif damage == "bit flips":
        noise = np.random.default_rng(0).integers(0, 256, len(content) - 512, dtype=np.uint8)
        path.write_bytes(content[:512] + noise.tobytes())
    elif damage == "json":
        path.write_text(json.dumps({"posterior": []}))
    elif damage == "missing":
        path.unlink()
    else:
        path.unlink()
        path.mkdir()
    with pytest.raises(error, match=message):
        diagnostics.load_datatree(path)


def test_netcdf_that_is_not_a_posterior(tmp_path):
    import xarray as xr

    path = tmp_path / "other.nc"
    xr.DataTree.from_dict({"stuff": xr.Dataset({"a": ("x", np.arange(3.0))})}).to_netcdf(
        path, engine="h5netcdf")
    with pytest.raises(ValueError, match=r"not a bayes_gmm posterior"):
        diagnostics.load_datatree(path)


SMALL = """\
    name = "small"
    seed = 3
    [data]
    source = "synthetic"
    n_samples = 40
    [model]
    n_components = 2
    max_iter = 10
    [output]
    iteration_figures = false
    log_posterior_figure = false
"""


def test_existing_results_folder_is_refused_and_kept(tmp_path, capsys):
    (tmp_path / "out" / "small").mkdir(parents=True)
    (tmp_path / "out" / "small" / "mine.txt").write_text("keep me")
    assert cli_run(tmp_path, SMALL) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "small" / "mine.txt").read_text() == "keep me"
    (tmp_path / "out" / "file").write_text("")
    text = SMALL.replace('name = "small"', 'name = "file"')
    assert cli_run(tmp_path, text, "--overwrite") == 2
    assert "exists and is not a folder" in capsys.readouterr().err


CSV_CONFIG = """\
    name = "from_csv"
    [data]
    source = "csv"
    path = "points.csv"
    [model]
    n_components = 2
    max_iter = 10
    [output]
    iteration_figures = false
    log_posterior_figure = false
"""


@pytest.mark.parametrize("content, message", [
    ("a,b\n1,2\n3,nan\n5,6\n", r"NaN|missing"),
    ("a,b\n1,2\n3,inf\n5,6\n", r"inf"),
    ("a,b\n1,2\n3,x\n5,6\n", r"not numeric"),
    ("a,b\n", r"has no data: 0 rows"),
    ("", r"could not read"),
])
def test_a_bad_csv_data_file_exits_1_naming_the_problem(tmp_path, capsys, content, message):
    (tmp_path / "points.csv").write_text(content)
    assert cli_run(tmp_path, CSV_CONFIG) == 1  # the config is fine; its data are not
    err = capsys.readouterr().err
    assert re.search(message, err) and "points.csv" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() or _leftovers(tmp_path / "out") == []


def test_a_runtime_failure_inside_jax_gives_one_line_not_a_traceback(tmp_path, capsys,
                                                                      monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 123 bytes.")

    monkeypatch.setattr(experiment, "fit", out_of_memory)
    assert cli_run(tmp_path, SMALL) == 1
    err = capsys.readouterr().err
    assert "RESOURCE_EXHAUSTED" in err and "no results were written" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or _leftovers(tmp_path / "out") == []


def test_config_with_unknown_key_exits_2_without_traceback(tmp_path, capsys):
    assert cli_run(tmp_path, SMALL.replace("max_iter = 10", "max_iters = 10")) == 2
    err = capsys.readouterr().err
    assert "unknown key 'model.max_iters'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_config_file_that_is_binary_or_truncated(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)
    path.write_text(SMALL[: SMALL.index("[model]") + 4])
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def _leftovers(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_interrupt_while_writing_map_json_leaves_nothing(tmp_path, capsys, monkeypatch):
    """Ctrl-C in the middle of the last write: half a file on disk, then the interrupt."""
    real_write = experiment._atomic_write

    def write_half_then_interrupt(path, content):
        if path.name == "map.json":
            path.with_name(f".{path.name}.partial-test.tmp").write_bytes(content[:20])
            raise KeyboardInterrupt
        real_write(path, content)

    monkeypatch.setattr(experiment, "_atomic_write", write_half_then_interrupt)
    assert cli_run(tmp_path, SMALL) == 130
    assert "interrupted; no results were written" in capsys.readouterr().err
    assert _leftovers(tmp_path / "out") == []


def test_interrupt_while_saving_the_posterior_leaves_no_file(tree, tmp_path, monkeypatch):
    import xarray as xr

    real = xr.DataTree.to_netcdf

    def half_then_interrupt(self, path, **kwargs):
        real(self, path, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.DataTree, "to_netcdf", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        diagnostics.save_datatree(tree, tmp_path / "posterior.nc")
    assert _leftovers(tmp_path) == []
