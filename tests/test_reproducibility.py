"""Same seed, same config, same versions: bit-identical results.

The command line runs one small config (MAP, then the posterior by Gibbs) twice into two
folders. ``map.json`` and ``posterior.nc`` must be the same bytes, and so must every
table but for the sampling time. Facts of the run itself (the clock time, how long
sampling took) live in ``run.json`` and are the only thing allowed to differ; the
record names the config, the seed, the package versions and the device.
"""

import json
import textwrap

import jax
import pandas as pd
import pytest

import bayes_gmm
from bayes_gmm.cli import main

CONFIG = """\
    name = "same"
    seed = 11
    [data]
    source = "synthetic"
    generator = "two_gaussians"
    n_samples = 60
    [model]
    n_components = 2
    n_init = 2
    max_iter = 50
    [posterior]
    method = "gibbs"
    num_chains = 2
    num_warmup = 20
    num_samples = 30
    init_jitter = 0.1
    [output]
    iteration_figures = false
    log_posterior_figure = false
    posterior_figures = false
"""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproducibility")
    config = root / "same.toml"
    config.write_text(textwrap.dedent(CONFIG))
    folders = []
    for out in ("first", "second"):
        assert main(["run", str(config), "--output-dir", str(root / out), "--quiet"]) == 0
        folders.append(root / out / "same")
    return folders


@pytest.mark.parametrize("name", ["map.json", "posterior.nc", "comparison.csv", "config.toml"])
def test_same_seed_same_config_same_bytes(two_runs, name):
    first, second = two_runs
    assert (first / name).read_bytes() == (second / name).read_bytes()


def test_only_the_run_facts_differ(two_runs):
    first, second = two_runs
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in second.iterdir())
    tables = [pd.read_csv(f / "diagnostics.csv", index_col=0) for f in two_runs]
    pd.testing.assert_frame_equal(*(t.drop(columns="sampling_time_s") for t in tables))
    records = [json.loads((f / "posterior.json").read_text()) for f in two_runs]
    for record in records:
        record["methods"]["gibbs"].pop("sampling_time_s")
    assert records[0] == records[1]
    for folder in two_runs:
        run = json.loads((folder / "run.json").read_text())
        assert run["created_at"] and run["sampling_time_s"]["gibbs"] > 0


def test_the_record_names_config_seed_versions_and_device(two_runs):
    record = json.loads((two_runs[0] / "map.json").read_text())
    assert record["seed"] == 11 and record["config"]["seed"] == 11
    assert record["config"]["posterior"]["method"] == "gibbs"
    env = record["environment"]
    assert env["bayes_gmm"] == bayes_gmm.__version__ and env["jax"] == jax.__version__
    for package in ("jaxlib", "numpy", "scipy", "numpyro", "arviz", "xarray", "h5py"):
        assert env[package], package
    device = jax.devices()[0]
    assert env["device_kind"] == device.device_kind
    assert env["device_platform"] == device.platform
    assert env["x64"] == bool(jax.config.jax_enable_x64)
    assert "run.json" in record["files"]
