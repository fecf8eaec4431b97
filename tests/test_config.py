"""Experiment configs: valid files load into frozen dataclasses with defaults; every
malformed file raises ConfigError naming the key path, what was expected and what came."""

import dataclasses
import json
import re
import textwrap
from pathlib import Path

import pytest

from bayes_gmm.config import (
    BuiltinData,
    ConfigError,
    CsvData,
    ExperimentConfig,
    MixtureData,
    PosteriorConfig,
    TwoGaussiansData,
    load_config,
    parse_config,
)

pytestmark = pytest.mark.float32_pass

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = """
name = "demo"
[data]
source = "synthetic"
[model]
n_components = 2
"""


def write(tmp_path, text, name="experiment.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_minimal_config_takes_the_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert isinstance(config, ExperimentConfig)
    assert config.seed == 0 and config.output_dir == "results"
    assert config.data == TwoGaussiansData()
    assert config.model.n_components == 2
    assert config.model.covariance_type == "full" and config.model.tol == 1e-6
    assert config.prior.estimator_kwargs() == {}
    assert config.output.iteration_figures and config.output.format == "png"
    assert config.posterior is None  # no [posterior]: the MAP only
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3


def test_walkthrough_config_loads():
    config = load_config(ROOT / "configs" / "em_walkthrough.toml")
    assert config.name == "em_walkthrough"
    assert config.model.init_params == "random"
    assert config.model.estimator_kwargs()["n_components"] == 2
    json.dumps(config.to_dict(), allow_nan=False)


def test_old_faithful_config_loads():
    config = load_config(ROOT / "configs" / "old_faithful.toml")
    assert config.name == "old_faithful"
    assert config.data == BuiltinData(name="old_faithful")
    assert (config.model.n_components, config.model.covariance_type) == (2, "full")
    posterior = config.posterior
    assert (posterior.method, posterior.num_chains, posterior.num_warmup,
            posterior.num_samples) == ("nuts", 4, 500, 1000)
    assert posterior.methods == ("nuts",) and posterior.hdi_prob == 0.89
    assert config.output.posterior_figures
    json.dumps(config.to_dict(), allow_nan=False)


def test_posterior_section(tmp_path):
    empty = load_config(write(tmp_path, MINIMAL + "[posterior]\n"))
    assert empty.posterior == PosteriorConfig()  # every key has a default
    assert empty.posterior.sampler_kwargs() == {
        "num_chains": 4, "num_warmup": 500, "num_samples": 1000, "thinning": 1,
        "init_jitter": 0.0, "init": "map", "log_likelihood": True,
    }
    config = load_config(write(tmp_path, MINIMAL + """
        [posterior]
        method = "gibbs"
        num_chains = 2
        num_warmup = 0
        num_samples = 10
        thinning = 3
        init_jitter = 0.5
        init = "default"
        hdi_prob = 0.5
        log_likelihood = false
        compare_methods = ["laplace", "nuts"]
    """))
    assert config.posterior == PosteriorConfig(
        method="gibbs", num_chains=2, num_warmup=0, num_samples=10, thinning=3,
        init_jitter=0.5, init="default", hdi_prob=0.5, log_likelihood=False,
        compare_methods=("laplace", "nuts"))
    assert config.posterior.methods == ("gibbs", "laplace", "nuts")
    assert config.to_dict()["posterior"]["compare_methods"] == ["laplace", "nuts"]
    none = load_config(write(tmp_path, MINIMAL + "[posterior]\ncompare_methods = []\n"))
    assert none.posterior.compare_methods == ()


def test_every_section_and_source(tmp_path):
    config = load_config(write(tmp_path, """
        name = "full_example"
        seed = 11
        output_dir = "elsewhere"
        [data]
        source = "synthetic"
        generator = "mixture"
        n_samples = 50
        weights = [0.3, 0.7]
        means = [[0, 0], [3, 3]]
        covariances = [[[1, 0], [0, 1]], [[0.5, 0.1], [0.1, 0.5]]]
        [model]
        n_components = 2
        covariance_type = "tied"
        init_params = "random_from_data"
        n_init = 3
        max_iter = 20
        tol = 1e-4
        [prior]
        weight_concentration_prior = [1.0, 2]
        mean_prior = [0, 1]
        mean_precision_prior = 0.5
        degrees_of_freedom_prior = 5
        covariance_prior = [[1, 0], [0, 2]]
        [output]
        iteration_figures = false
        format = "svg"
        dpi = 72
        features = [1, 0]
    """))
    assert isinstance(config.data, MixtureData)
    assert config.data.covariances[1] == ((0.5, 0.1), (0.1, 0.5))
    assert config.prior.estimator_kwargs() == {
        "weight_concentration_prior": (1.0, 2.0),
        "mean_prior": (0.0, 1.0),
        "mean_precision_prior": 0.5,
        "degrees_of_freedom_prior": 5.0,
        "covariance_prior": ((1.0, 0.0), (0.0, 2.0)),
    }
    assert config.output.features == (1, 0)
    assert config.to_dict()["prior"]["covariance_prior"] == [[1.0, 0.0], [0.0, 2.0]]


def test_builtin_and_csv_sources(tmp_path):
    builtin = parse_config({"name": "f", "model": {"n_components": 2},
                            "data": {"source": "builtin", "name": "old_faithful",
                                     "columns": ["waiting"]}})
    assert builtin.data == BuiltinData(name="old_faithful", columns=("waiting",))
    (tmp_path / "sub").mkdir()
    config = load_config(write(tmp_path, """
        name = "mine"
        [data]
        source = "csv"
        path = "../points.csv"
        [model]
        n_components = 1
    """, name="sub/experiment.toml"))
    assert isinstance(config.data, CsvData)
    # Relative to the config file, not to the working directory.
    assert config.data.path == (tmp_path / "points.csv").resolve()


def test_missing_file():
    with pytest.raises(ConfigError, match=r"config file not found: 'no/such\.toml'"):
        load_config("no/such.toml")


def test_invalid_toml(tmp_path):
    path = write(tmp_path, 'name = "x"\n[model\nn_components = 2\n')
    with pytest.raises(ConfigError, match=r"experiment\.toml is not valid TOML: .*line 2"):
        load_config(path)


def edit(base, section, key, value):
    """MINIMAL with ``key = value`` set in ``section`` ("" for the top level)."""
    if re.search(rf"^{key} = ", base, flags=re.M):
        return re.sub(rf"^{key} = .*$", f"{key} = {value}", base, count=1, flags=re.M)
    if not section:
        return f"{key} = {value}\n" + base
    header = f"[{section}]\n"
    if header in base:
        return base.replace(header, header + f"{key} = {value}\n")
    return base + header + f"{key} = {value}\n"


BAD = [
    # (section, key, value, key path in the message, words of the message)
    ("model", "n_component", "2", "model.n_component",
     r"unknown key .*Did you mean 'n_components'"),
    ("", "sed", "1", "sed", r"unknown key 'sed' .*the top level takes name"),
    ("data", "path", '"a.csv"', "data.path", r"unknown key .*generator = 'two_gaussians' takes"),
    ("model", "n_components", '"2"', "model.n_components",
     r"expected an integer; got '2' \(a string\)"),
    ("model", "tol", '"small"', "model.tol", r"expected a finite number; got 'small'"),
    ("model", "tol", "nan", "model.tol", r"expected a finite number; got nan"),
    ("model", "max_iter", "-1", "model.max_iter", r"expected an integer >= 0; got -1"),
    ("model", "covariance_type", '"fulll"', "model.covariance_type",
     r"expected one of 'full', 'tied', 'diag', 'spherical'; got 'fulll'"),
    ("model", "init_params", '"kmeans"', "model.init_params", r"expected one of 'k-means\+\+'"),
    ("", "seed", "1.5", "seed", r"expected an integer; got 1\.5 \(a number\)"),
    ("", "seed", "-1", "seed", r"expected an integer >= 0"),
    ("", "output_dir", "3", "output_dir", r"expected a string; got 3 \(an integer\)"),
    ("output", "iteration_figures", '"yes"', "output.iteration_figures",
     r"expected true or false; got 'yes'"),
    ("output", "format", '"jpg"', "output.format", r"expected one of 'png', 'pdf', 'svg'"),
    ("output", "features", "[0, 0]", "output.features", r"two different column indices"),
    ("output", "features", "[0, 2]", "output.features", r"below n_features = 2"),
    ("data", "n_samples", "0", "data.n_samples", r"expected an integer >= 1; got 0"),
    ("data", "weights", "[1.0]", "data.weights", r"two numbers"),
    ("data", "generator", '"blobs"', "data.generator",
     r"expected one of 'two_gaussians', 'mixture'"),
    ("prior", "mean_precision_prior", "[1, 2]", "prior.mean_precision_prior",
     r"expected a finite number; got \[1, 2\] \(an array\)"),
    ("prior", "mean_prior", "[0, 0, 0]", "prior.mean_prior", r"n_features = 2 numbers"),
    ("prior", "weight_concentration_prior", "[1, 1, 1]", "prior.weight_concentration_prior",
     r"a list of n_components = 2 numbers"),
    ("prior", "covariance_prior", "[1, 2]", "prior.covariance_prior",
     r"a 2 x 2 matrix .* for covariance_type = 'full'"),
    ("prior", "covariance_prior", "[[1, 0], [0]]", "prior.covariance_prior", r"2 x 2 matrix"),
    ("prior", "covariance_prior", '"big"', "prior.covariance_prior",
     r"a finite number, a list of numbers or a matrix"),
    ("", "sampler", "{}", "sampler", r"unknown key 'sampler' .*the top level takes"),
    ("", "posterior", "3", "posterior", r"expected a table; got 3"),
    ("posterior", "method", '"hmc"', "posterior.method",
     r"expected one of 'nuts', 'gibbs', 'laplace'; got 'hmc'"),
    ("posterior", "num_chains", "0", "posterior.num_chains", r"expected an integer >= 1; got 0"),
    ("posterior", "num_samples", "-5", "posterior.num_samples",
     r"expected an integer >= 1; got -5"),
    ("posterior", "num_warmup", "-1", "posterior.num_warmup", r"expected an integer >= 0"),
    ("posterior", "thinning", "0", "posterior.thinning", r"expected an integer >= 1"),
    ("posterior", "num_samples", "100.0", "posterior.num_samples",
     r"expected an integer; got 100\.0 \(a number\)"),
    ("posterior", "init_jitter", "-0.1", "posterior.init_jitter",
     r"expected a finite number >= 0\.0"),
    ("posterior", "init", '"random"', "posterior.init", r"expected one of 'map', 'default'"),
    ("posterior", "hdi_prob", "1.0", "posterior.hdi_prob",
     r"a probability strictly between 0 and 1; got 1\.0"),
    ("posterior", "hdi_prob", "0", "posterior.hdi_prob", r"strictly between 0 and 1"),
    ("posterior", "log_likelihood", '"yes"', "posterior.log_likelihood",
     r"expected true or false"),
    ("posterior", "compare_methods", '["gibbs", "hmc"]', "posterior.compare_methods",
     r"a list of methods among 'nuts', 'gibbs', 'laplace'; got \['gibbs', 'hmc'\]"),
    ("posterior", "compare_methods", '"gibbs"', "posterior.compare_methods",
     r"a list of methods .*Write e\.g\. compare_methods = \[\"gibbs\", \"laplace\"\]"),
    ("posterior", "compare_methods", '["nuts"]', "posterior.compare_methods",
     r"methods other than method = 'nuts'.*Remove 'nuts'"),
    ("posterior", "compare_methods", '["gibbs", "gibbs"]', "posterior.compare_methods",
     r"each once.*Remove 'gibbs'"),
    ("posterior", "num_chain", "2", "posterior.num_chain",
     r"unknown key .*Did you mean 'num_chains'"),
    ("output", "posterior_figures", "1", "output.posterior_figures",
     r"expected true or false; got 1"),
    ("", "model", "3", "model", r"expected a table; got 3"),
]


@pytest.mark.parametrize("section, key, value, path, words", BAD,
                         ids=[f"{b[3]}={b[2]}" for b in BAD])
def test_malformed_config_names_the_key(tmp_path, section, key, value, path, words):
    text = edit(MINIMAL, section, key, value)
    if section == "" and key == "model":
        text = text.replace("[model]\nn_components = 2\n", "")
    with pytest.raises(ConfigError, match=re.escape(path)) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert re.search(words, message), message
    assert info.value.key == path
    assert "experiment.toml" in message  # the file is named too
    assert message.rstrip().endswith(".")  # and the message ends with the fix


@pytest.mark.parametrize(
    "text, path, words",
    [
        ('name = "x"\n[data]\nsource = "synthetic"\n[model]\ncovariance_type = "full"\n',
         "model.n_components", r"missing key .*an integer >= 1\. Add e\.g\. n_components = 2"),
        ('name = "x"\n[data]\nsource = "synthetic"\n', "model", r"Add a \[model\] section"),
        ('[data]\nsource = "synthetic"\n[model]\nn_components = 2\n', "name", r"missing key"),
        ('name = "x"\n[data]\n[model]\nn_components = 2\n', "data.source",
         r"missing key 'data.source'.*'synthetic', 'builtin', 'csv'"),
        ('name = "x"\n[data]\nsource = "web"\n[model]\nn_components = 2\n', "data.source",
         r"expected one of 'synthetic', 'builtin', 'csv'; got 'web'"),
        ('name = "x"\n[data]\nsource = "builtin"\n[model]\nn_components = 2\n', "data.name",
         r"missing key .*'old_faithful', 'galaxy_velocities'"),
        ('name = "x"\n[data]\nsource = "csv"\n[model]\nn_components = 2\n', "data.path",
         r"missing key 'data.path'"),
        ('name = "x"\n[data]\nsource = "synthetic"\ngenerator = "mixture"\nweights = [1.0]\n'
         'means = [[0, 0]]\n[model]\nn_components = 1\n', "data.covariances", r"missing key"),
        ('name = "../up"\n[data]\nsource = "synthetic"\n[model]\nn_components = 2\n', "name",
         r"a folder name"),
    ],
)
def test_missing_or_invalid_values_name_the_key(tmp_path, text, path, words):
    with pytest.raises(ConfigError, match=re.escape(path)) as info:
        load_config(write(tmp_path, text))
    assert re.search(words, str(info.value)), str(info.value)
    assert info.value.key == path


def test_mixture_shapes_are_checked(tmp_path):
    text = """
        name = "x"
        [data]
        source = "synthetic"
        generator = "mixture"
        weights = [0.5, 0.5]
        means = [[0, 0], [1, 1]]
        covariances = [[[1, 0], [0, 1]], [[1, 0, 0], [0, 1, 0], [0, 0, 1]]]
        [model]
        n_components = 2
    """
    with pytest.raises(ConfigError, match=r"data\.covariances\[1\]: expected a 2 x 2 matrix"):
        load_config(write(tmp_path, text))


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_posterior_methods_match_the_samplers():
    # config.py spells the methods out (reading a config never imports NumPyro).
    import typing

    from bayes_gmm.config import PosteriorMethod
    from bayes_gmm.posterior import METHODS

    assert typing.get_args(PosteriorMethod) == METHODS


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.name == path.stem  # the results folder is named after the file
    json.dumps(config.to_dict(), allow_nan=False)


def test_map_vs_posterior_configs_compare_three_methods():
    full = load_config(ROOT / "configs" / "map_vs_posterior.toml")
    small = load_config(ROOT / "configs" / "map_vs_posterior_small.toml")
    assert full.data == BuiltinData(name="old_faithful")
    assert small.data == BuiltinData(name="old_faithful", subsample=20, seed=1)
    for config in (full, small):
        assert set(config.posterior.methods) == {"nuts", "gibbs", "laplace"}
        assert config.posterior.methods[0] == "nuts"  # NUTS's files keep the plain names
    # The same model and samplers; only the data differ.
    assert dataclasses.replace(small, name=full.name, data=full.data) == full


def test_subsample_of_builtin_and_csv_data(tmp_path):
    config = parse_config({"name": "f", "model": {"n_components": 2},
                           "data": {"source": "builtin", "name": "old_faithful",
                                    "subsample": 20}})
    assert (config.data.subsample, config.data.seed) == (20, None)  # seed: the experiment's
    csv = parse_config({"name": "f", "model": {"n_components": 2},
                        "data": {"source": "csv", "path": "x.csv", "subsample": 5, "seed": 3}})
    assert (csv.data.subsample, csv.data.seed) == (5, 3)
    assert csv.to_dict()["data"]["subsample"] == 5


@pytest.mark.parametrize(
    "data, path, words",
    [
        ('subsample = 0', "data.subsample", r"expected an integer >= 1; got 0"),
        ('subsample = 2.5', "data.subsample", r"expected an integer; got 2\.5"),
        ('subsample = "20"', "data.subsample", r"expected an integer; got '20' \(a string\)"),
        ('subsample = 20\nseed = -1', "data.seed", r"expected an integer >= 0; got -1"),
        ('seed = 3', "data.seed",
         r"no seed without subsample .*Add e\.g\. subsample = 20, or remove seed\."),
    ],
)
def test_bad_subsample_names_the_key(tmp_path, data, path, words):
    text = f'name = "x"\n[data]\nsource = "builtin"\nname = "old_faithful"\n{data}\n' \
           '[model]\nn_components = 2\n'
    with pytest.raises(ConfigError, match=re.escape(path)) as info:
        load_config(write(tmp_path, text))
    assert re.search(words, str(info.value)), str(info.value)
    assert info.value.key == path


def test_synthetic_data_take_no_subsample(tmp_path):
    # Synthetic data have n_samples for that; subsample would be a second way to say it.
    with pytest.raises(ConfigError, match=r"unknown key 'data\.subsample'.*n_samples"):
        load_config(write(tmp_path, MINIMAL.replace('source = "synthetic"',
                                                    'source = "synthetic"\nsubsample = 5')))
