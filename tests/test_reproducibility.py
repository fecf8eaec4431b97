"""Same seed, same config, same versions: bit-identical results.

The command line runs one small config (MAP, then the posterior by Gibbs and by NUTS)
twice into two folders: once in this process and once in a fresh interpreter, so that
nothing cached in memory can make the two agree. ``map.json`` and both posterior files
must be the same bytes, and so must every table but for the sampling time. Facts of
the run itself (the clock time, how long sampling took) live in ``run.json`` and are the
only thing allowed to differ; the record names the config, the seed, the package
versions and the device.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import pandas as pd
import pytest

import bayes_gmm
from bayes_gmm.cli import main

pytestmark = pytest.mark.float32_pass

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
    compare_methods = ["nuts"]
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
    assert main(["run", str(config), "--output-dir", str(root / "first"), "--quiet"]) == 0
    env = {**os.environ, "JAX_ENABLE_X64": "1" if jax.config.jax_enable_x64 else "0"}
    done = subprocess.run(
        [sys.executable, "-m", "bayes_gmm.cli", "run", str(config), "--output-dir",
         str(root / "second"), "--quiet"],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return [root / "first" / "same", root / "second" / "same"]


@pytest.mark.parametrize("name", ["map.json", "posterior.nc", "posterior_nuts.nc",
                                  "comparison.csv", "comparison_nuts.csv", "config.toml"])
def test_same_seed_same_config_same_bytes(two_runs, name):
    first, second = two_runs
    assert (first / name).read_bytes() == (second / name).read_bytes()


def test_only_the_run_facts_differ(two_runs):
    first, second = two_runs
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in second.iterdir())
    for name in ("diagnostics.csv", "diagnostics_nuts.csv"):
        tables = [pd.read_csv(f / name, index_col=0) for f in two_runs]
        pd.testing.assert_frame_equal(*(t.drop(columns="sampling_time_s") for t in tables))
    records = [json.loads((f / "posterior.json").read_text()) for f in two_runs]
    for record in records:
        for method in ("gibbs", "nuts"):
            record["methods"][method].pop("sampling_time_s")
    assert records[0] == records[1]
    for folder in two_runs:
        run = json.loads((folder / "run.json").read_text())
        assert run["created_at"] and run["sampling_time_s"]["gibbs"] > 0
        assert run["sampling_time_s"]["nuts"] > 0


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
