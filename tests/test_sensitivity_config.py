"""The [sensitivity] section: read and checked like every section (errors name the key),
run by the CLI after the MAP fit into the results folder (sweep.nc, sweep.csv, the
figures, power_scaling.csv with a posterior, sensitivity.json), at smoke sizes."""

import contextlib
import io
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bayes_gmm.cli import main
from bayes_gmm.config import ConfigError, load_config, parse_config
from bayes_gmm.sensitivity import HYPERPARAMETERS

pytestmark = pytest.mark.float32_pass

ROOT = Path(__file__).resolve().parents[1]
OLD_FAITHFUL = ROOT / "configs" / "prior_sensitivity.toml"
GALAXY = ROOT / "configs" / "prior_sensitivity_galaxy.toml"
# The shipped sizes and the smoke sizes the suite runs instead.
SMOKE = {
    "n_init = 5": "n_init = 1",
    "num_chains = 4": "num_chains = 2",
    "num_warmup = 1000": "num_warmup = 30",
    "num_samples = 2000": "num_samples = 40",
    "posterior_figures = true": "posterior_figures = false",
    "log_posterior_figure = true": "log_posterior_figure = false",
    "geomspace = [0.001, 10.0, 16]": "geomspace = [0.01, 10.0, 4]",
    "mean_precision_prior = [0.01, 0.1, 1.0, 10.0, 100.0]": "mean_precision_prior = [0.01, 10.0]",
}

BASE = """
name = "s"
[data]
source = "builtin"
name = "old_faithful"
[model]
n_components = 2
"""


def parse(text):
    import tomllib

    return parse_config(tomllib.loads(BASE + textwrap.dedent(text)))


def smoke_config(path, tmp_path):
    text = path.read_text()
    for shipped, smoke in SMOKE.items():
        if shipped in text:
            text = text.replace(shipped, smoke)
    target = tmp_path / path.name
    target.write_text(text)
    return target


def run(argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(argv)
    return status, stdout.getvalue(), stderr.getvalue()


# --------------------------------------------------------------------------------------
# The section


def test_the_shipped_configs_load():
    for path, other in ((OLD_FAITHFUL, "mean_precision_prior"),
                        (GALAXY, "covariance_prior_scale")):
        spec = load_config(path).sensitivity
        grid = spec.grid.arrays()
        assert list(grid) == ["weight_concentration_prior", other]
        np.testing.assert_allclose(grid["weight_concentration_prior"],
                                   np.geomspace(0.001, 10.0, 16))
        assert spec.combine == "cross" and spec.n_points == 80
        json.dumps(load_config(path).to_dict(), allow_nan=False)
    # The galaxy velocities in 1000 km/s, as in the literature and notebook 03.
    assert load_config(GALAXY).data.thousands


def test_three_spellings_of_an_axis_and_the_defaults():
    config = parse("""
        [sensitivity.grid]
        weight_concentration_prior = { geomspace = [0.001, 10.0, 5] }
        mean_precision_prior = [0.01, 0.1]
        degrees_of_freedom_prior = { linspace = [3.0, 7.0, 3] }
        covariance_prior_scale = { values = [0.5, 2.0] }
    """)
    spec = config.sensitivity
    grid = spec.grid.arrays()
    assert list(grid) == list(HYPERPARAMETERS)  # the order of the Dataset's dimensions
    np.testing.assert_allclose(grid["weight_concentration_prior"], np.geomspace(1e-3, 10, 5))
    np.testing.assert_allclose(grid["mean_precision_prior"], [0.01, 0.1])
    np.testing.assert_allclose(grid["degrees_of_freedom_prior"], [3.0, 5.0, 7.0])
    np.testing.assert_allclose(grid["covariance_prior_scale"], [0.5, 2.0])
    assert (spec.combine, spec.weight_threshold, spec.start, spec.power_scaling) == (
        "cross", 0.01, "map", True)
    assert spec.n_points == 5 * 2 * 3 * 2
    assert parse("").sensitivity is None


def test_round_trip_through_to_dict():
    config = parse("""
        [sensitivity]
        combine = "zip"
        weight_threshold = 0.05
        start = "k-means++"
        power_scaling = false
        [sensitivity.grid]
        weight_concentration_prior = { geomspace = [0.01, 1.0, 3] }
        mean_precision_prior = [0.01, 0.1, 1.0]
    """)
    plain = config.to_dict()
    assert plain["sensitivity"]["grid"]["mean_precision_prior"]["values"] == [0.01, 0.1, 1.0]

    def drop_none(value):
        if isinstance(value, dict):
            return {k: drop_none(v) for k, v in value.items() if v is not None}
        return value

    again = parse_config(drop_none(plain))
    assert again == config
    assert again.sensitivity.n_points == 3


@pytest.mark.parametrize("text, key, words", [
    ("[sensitivity]\ncombine = 'cross'", "sensitivity.grid", "Add a [sensitivity.grid]"),
    ("[sensitivity.grid]", "sensitivity.grid", "at least one hyperparameter"),
    ("[sensitivity.grid]\nmean_precison_prior = [1.0]",
     "sensitivity.grid.mean_precison_prior", "Did you mean 'mean_precision_prior'"),
    ("[sensitivity.grid]\nmean_precision_prior = 0.1", "sensitivity.grid.mean_precision_prior",
     "a list of numbers, or a table"),
    ("[sensitivity.grid]\nmean_precision_prior = ['a']",
     "sensitivity.grid.mean_precision_prior.values", "a list of numbers"),
    ("[sensitivity.grid]\nmean_precision_prior = []",
     "sensitivity.grid.mean_precision_prior.values", "a list of numbers"),
    ("[sensitivity.grid]\nmean_precision_prior = { geomspace = [0.0, 1.0, 3] }",
     "sensitivity.grid.mean_precision_prior.geomspace", "positive start and stop"),
    ("[sensitivity.grid]\nmean_precision_prior = { linspace = [0.1, 1.0, 2.5] }",
     "sensitivity.grid.mean_precision_prior.linspace", "whole number"),
    ("[sensitivity.grid]\nmean_precision_prior = { linspace = [0.1, 1.0] }",
     "sensitivity.grid.mean_precision_prior.linspace", "three numbers"),
    ("[sensitivity.grid]\nmean_precision_prior = { values = [1.0], linspace = [1, 2, 3] }",
     "sensitivity.grid.mean_precision_prior", "exactly one of values, geomspace, linspace"),
    ("[sensitivity.grid]\nmean_precision_prior = { logspace = [1, 2, 3] }",
     "sensitivity.grid.mean_precision_prior.logspace", "takes values, geomspace, linspace"),
    ("[sensitivity]\ncombine = 'outer'\n[sensitivity.grid]\nmean_precision_prior = [1.0]",
     "sensitivity.combine", "one of 'cross', 'zip'"),
    ("[sensitivity]\ncombine = 'zip'\n[sensitivity.grid]\nmean_precision_prior = [1.0, 2.0]\n"
     "weight_concentration_prior = [1.0]", "sensitivity.combine", "equal length"),
    ("[sensitivity]\nweight_threshold = 1.5\n[sensitivity.grid]\nmean_precision_prior = [1.0]",
     "sensitivity.weight_threshold", "in [0, 1)"),
    ("[sensitivity]\nweight_threshold = -0.1\n[sensitivity.grid]\nmean_precision_prior = [1.0]",
     "sensitivity.weight_threshold", ">= 0.0"),
    ("[sensitivity]\nstart = 'middle'\n[sensitivity.grid]\nmean_precision_prior = [1.0]",
     "sensitivity.start", "'map'"),
    ("[posterior]\nlog_likelihood = false\n[sensitivity.grid]\nmean_precision_prior = [1.0]",
     "sensitivity.power_scaling", "log_likelihood = true"),
])
def test_bad_sections_name_the_key(text, key, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as caught:
        parse(text)
    assert caught.value.key == key
    assert key in str(caught.value)


def test_power_scaling_off_allows_a_posterior_without_log_likelihood():
    config = parse("""
        [posterior]
        log_likelihood = false
        [sensitivity]
        power_scaling = false
        [sensitivity.grid]
        mean_precision_prior = [1.0]
    """)
    assert not config.sensitivity.power_scaling


# --------------------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="module")
def old_faithful(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sensitivity")
    config = smoke_config(OLD_FAITHFUL, tmp)
    out = tmp / "out"
    status, stdout, stderr = run(["run", str(config), "--output-dir", str(out), "--quiet"])
    assert status == 0, stderr
    return out / "prior_sensitivity"


def test_cli_writes_the_sweep(old_faithful):
    folder = old_faithful
    files = {p.name for p in folder.iterdir()}
    assert {"sweep.nc", "sweep.csv", "sweep.png", "effective_components.png",
            "power_scaling.csv", "sensitivity.json", "map.json", "posterior.nc"} <= files
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]
    record = json.loads((folder / "map.json").read_text())
    assert {"sweep.nc", "sweep.csv", "sweep.png", "sensitivity.json"} <= set(record["files"])
    run_record = json.loads((folder / "run.json").read_text())
    assert run_record["sweep_time_s"] > 0

    with xr.open_dataset(folder / "sweep.nc", engine="h5netcdf") as ds:
        sweep = ds.load()
    assert sweep.sizes["weight_concentration_prior"] == 4
    assert sweep.sizes["mean_precision_prior"] == 2 and sweep.sizes["component"] == 3
    assert sweep["converged"].dtype == bool
    # Every fit starts at the MAP: the reference (the base prior from there) is the MAP, up
    # to the EM step it takes before it stops. EM stops on the log posterior's relative
    # change (tol 1e-6), and at this slowly converging mode (the spare component) one more
    # step still moves a weight by ~3e-4 in float64 (less in float32).
    np.testing.assert_allclose(np.sort(sweep["reference_weights"].values),
                               np.sort(record["weights"]), atol=1e-3)

    table = pd.read_csv(folder / "sweep.csv")
    assert len(table) == 4 * 2 * 3
    assert list(table.columns[:4]) == ["weight_concentration_prior", "mean_precision_prior",
                                       "component", "weight"]
    assert {"mean_eruptions", "variance_waiting", "n_effective_components"} <= set(table.columns)
    np.testing.assert_allclose(table.groupby(["weight_concentration_prior",
                                              "mean_precision_prior"])["weight"].sum(), 1,
                               atol=1e-4)

    power = pd.read_csv(folder / "power_scaling.csv", index_col="parameter")
    assert list(power.columns) == ["prior", "likelihood", "diagnosis"]
    assert len(power) == 3 + 3 * 2 + 3 * 3  # covariances: the upper triangle only
    summary = json.loads((folder / "sensitivity.json").read_text())
    assert summary["n_points"] == 8
    assert summary["power_scaling"]["method"] == "gibbs"
    assert summary["power_scaling"]["n_parameters"] == len(power)
    assert 1 <= summary["n_effective_components"]["min"] <= 3


def test_cli_summary_and_a_zipped_sweep_without_posterior(tmp_path):
    # K, max_iter, start and the number of points as in the smoke config above: the
    # EM and sweep compilations are reused.
    config = tmp_path / "zip.toml"
    config.write_text(textwrap.dedent("""
        name = "s"
        [data]
        source = "builtin"
        name = "old_faithful"
        [model]
        n_components = 3
        max_iter = 500
        [output]
        iteration_figures = false
        log_posterior_figure = false
        [sensitivity]
        combine = "zip"
        [sensitivity.grid]
        mean_precision_prior = { geomspace = [0.01, 100.0, 8] }
        covariance_prior_scale = { geomspace = [0.1, 10.0, 8] }
    """))
    status, stdout, stderr = run(["run", str(config), "--output-dir", str(tmp_path / "out")])
    assert status == 0, stderr
    assert "prior sweep    8 MAP fits (mean_precision_prior 8 zip covariance_prior_scale 8)" \
        in stdout
    assert "effective    " in stdout and "power scaling" not in stdout
    assert "sweep.nc, sweep.csv" in stdout
    folder = tmp_path / "out" / "s"
    files = {p.name for p in folder.iterdir()}
    assert "power_scaling.csv" not in files and "effective_components.png" not in files
    table = pd.read_csv(folder / "sweep.csv")
    assert list(table.columns[:4]) == ["point", "mean_precision_prior",
                                       "covariance_prior_scale", "component"]
    assert len(table) == 8 * 3
    np.testing.assert_allclose(table["covariance_prior_scale"].unique(),
                               np.geomspace(0.1, 10.0, 8), rtol=1e-9)


def test_a_grid_value_the_data_refuse_exits_2_before_fitting(tmp_path, monkeypatch):
    from bayes_gmm import experiment

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted before the grid was checked")

    monkeypatch.setattr(experiment, "fit", no_fit)
    config = tmp_path / "bad.toml"
    config.write_text(BASE + "[sensitivity.grid]\ndegrees_of_freedom_prior = [3.0, 0.5]\n")
    status, stdout, stderr = run(["run", str(config), "--output-dir", str(tmp_path / "out")])
    assert status == 2
    assert "sensitivity.grid.degrees_of_freedom_prior" in stderr
    assert "got 0.5 at index 1" in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "out" / "s").exists()


def test_a_bad_section_exits_2_naming_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(BASE + "[sensitivity.grid]\nweight_concentration = [1.0]\n")
    status, _, stderr = run(["run", str(config), "--output-dir", str(tmp_path / "out")])
    assert status == 2
    assert "sensitivity.grid.weight_concentration" in stderr
    assert "Did you mean 'weight_concentration_prior'" in stderr
