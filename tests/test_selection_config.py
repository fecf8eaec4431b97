"""The [selection] section: read and checked like every section (errors name the key),
checked against the data before any fit, and run by the CLI after the MAP fit into the
results folder (selection.csv, selection.png, selection.json, and with
[selection.occupied] occupied_components.csv and .png), at smoke sizes; a model search
over several covariance types reaches select_k, the results folder and the summary
(with a table of select_k's shape, built by hand)."""

import contextlib
import io
import json
import re
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from selection_tables import TYPES, selection_table

from bayes_gmm import plots, selection
from bayes_gmm.cli import _selection_lines, main
from bayes_gmm.config import ConfigError, load_config, parse_config
from bayes_gmm.experiment import (
    SelectionResult,
    check_selection,
    load_data,
    selection_ranking,
)
from bayes_gmm.selection import CRITERIA

pytestmark = pytest.mark.float32_pass

ROOT = Path(__file__).resolve().parents[1]
GALAXY = ROOT / "configs" / "choosing_k.toml"
SYNTHETIC = ROOT / "configs" / "choosing_k_synthetic.toml"

BASE = """
name = "s"
[data]
source = "builtin"
name = "galaxy_velocities"
thousands = true
[model]
n_components = 2
"""


def parse(text, base=BASE):
    return parse_config(tomllib.loads(base + textwrap.dedent(text)))


def run(argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(argv)
    return status, stdout.getvalue(), stderr.getvalue()


# --------------------------------------------------------------------------------------
# The section


def test_the_shipped_configs_load():
    galaxy = load_config(GALAXY)
    assert galaxy.data.thousands and galaxy.data.name == "galaxy_velocities"
    assert galaxy.selection.k_values == list(range(1, 9))
    assert galaxy.selection.criteria == CRITERIA
    assert galaxy.selection.occupied.k_max == 10
    assert galaxy.selection.occupied.weight_concentration_prior == 0.01
    assert galaxy.selection.occupied.reference == (3, 7)  # Richardson & Green (1997)
    synthetic = load_config(SYNTHETIC)
    assert synthetic.selection.occupied.reference is None
    assert synthetic.selection.k_values == list(range(1, 7))
    assert len(synthetic.data.weights) == synthetic.model.n_components == 3


def test_defaults_and_spellings():
    spec = parse("[selection]\n").selection
    assert spec.k_values == [1, 2, 3, 4, 5, 6] and spec.criteria == CRITERIA
    assert spec.occupied is None and spec.posterior == "gibbs"
    assert parse("[selection]\nks = 4\n").selection.k_values == [1, 2, 3, 4]
    assert parse("[selection]\nks = [5, 2, 2]\n").selection.k_values == [2, 5]
    spec = parse("[selection]\ncriteria = ['bic']\n[selection.occupied]\n").selection
    assert spec.criteria == ("bic",) and spec.occupied.k_max == 10
    assert spec.occupied.reference is None
    spec = parse("[selection]\n[selection.occupied]\nreference = [4, 4]\n").selection
    assert spec.occupied.reference == (4, 4)
    assert parse("").selection is None


def test_covariance_type_is_model_s_one_type_or_a_list():
    config = parse("[selection]\n")
    assert config.selection.covariance_type is None
    assert config.selection.covariance_types(config.model) == "full"
    config = parse('covariance_type = "diag"\n[selection]\n')  # under [model]
    assert config.selection.covariance_types(config.model) == "diag"
    config = parse('[selection]\ncovariance_type = "tied"\n')
    assert config.selection.covariance_types(config.model) == "tied"
    config = parse('[selection]\ncovariance_type = ["full", "diag", "spherical", "tied"]\n')
    assert config.selection.covariance_types(config.model) == TYPES
    assert config.to_dict()["selection"]["covariance_type"] == TYPES
    assert config.model.covariance_type == "full"  # the main fit keeps [model]'s


def test_the_config_config_record_is_plain_json():
    config = load_config(GALAXY)
    settings = json.loads(json.dumps(config.to_dict()))["selection"]
    assert settings["ks"] == list(range(1, 9)) and settings["occupied"]["k_max"] == 10


@pytest.mark.parametrize(("text", "key", "words"), [
    ("[selection]\nks = [0, 3]\n", "selection.ks", ">= 1"),
    ("[selection]\nks = []\n", "selection.ks", "an integer or a list of integers"),
    ("[selection]\nks = [1.5, 2]\n", "selection.ks", "an integer or a list of integers"),
    ("[selection]\nks = 0\n", "selection.ks", ">= 1"),
    ("[selection]\ncriteria = ['bix']\n", "selection.criteria", "Did you mean 'bic'"),
    ("[selection]\ncriteria = ['bic', 'bic']\n", "selection.criteria", "each criterion once"),
    ("[selection]\ncriteria = 'bic'\n", "selection.criteria", "a list of strings"),
    ("[selection]\nvalidation_fraction = 1.0\n", "selection.validation_fraction",
     "strictly between 0 and 1"),
    ("[selection]\nposterior = 'hmc'\n", "selection.posterior", "'nuts', 'gibbs', 'laplace'"),
    ("[selection]\nnum_samples = 0\n", "selection.num_samples", ">= 1"),
    ("[selection]\nkmax = 3\n", "selection.kmax", "takes ks, covariance_type, criteria"),
    ("[selection]\n[selection.occupied]\nk_max = 1\n", "selection.occupied.k_max", ">= 2"),
    ("[selection]\n[selection.occupied]\nweight_concentration_prior = 0.0\n",
     "selection.occupied.weight_concentration_prior", "> 0"),
    ("[selection]\n[selection.occupied]\ne0 = 0.1\n", "selection.occupied.e0",
     "Remove it or fix its name"),
    ("[selection]\n[selection.occupied]\nreference = [7, 3]\n",
     "selection.occupied.reference", "1 <= low <= high"),
    ("[selection]\n[selection.occupied]\nreference = [0, 3]\n",
     "selection.occupied.reference", "1 <= low <= high"),
    ("[selection]\n[selection.occupied]\nreference = [3, 5, 7]\n",
     "selection.occupied.reference", "two numbers of components"),
    ("[selection]\n[selection.occupied]\nreference = [3.5, 7]\n",
     "selection.occupied.reference", "a list of integers.*reference = \\[3, 7\\]"),
    ("[selection]\n[selection.occupied]\nreference = 3\n",
     "selection.occupied.reference", "a list of integers"),
    ("selection = 3\n", "selection", "a table"),
    ("[selection]\ncovariance_type = ['full', 'box']\n", "selection.covariance_type",
     "one of 'full', 'tied', 'diag', 'spherical', or a list of them \\(each once\\)"),
    ("[selection]\ncovariance_type = 'ful'\n", "selection.covariance_type",
     "Did you mean 'full'"),
    ("[selection]\ncovariance_type = ['diag', 'full', 'diag']\n", "selection.covariance_type",
     "each once.*Remove the repeated 'diag'"),
    ("[selection]\ncovariance_type = []\n", "selection.covariance_type",
     "a string or a list of strings.*\"full\", \"tied\", \"diag\", \"spherical\""),
    ("[selection]\ncovariance_type = 3\n", "selection.covariance_type",
     "a string or a list of strings"),
])
def test_bad_keys_and_values_are_named(text, key, words):
    base = BASE
    if text.startswith("selection ="):  # a top-level key goes before the first table
        base, text = text + BASE, ""
    with pytest.raises(ConfigError, match=words) as caught:
        parse(text, base)
    assert caught.value.key == key
    assert str(caught.value).startswith(key) or repr(key) in str(caught.value)


def test_one_weight_concentration_for_every_k():
    with pytest.raises(ConfigError, match="one number with a \\[selection\\]") as caught:
        parse("[prior]\nweight_concentration_prior = [1.0, 1.0]\n[selection]\n")
    assert caught.value.key == "prior.weight_concentration_prior"


def test_thousands_only_for_the_galaxy_velocities():
    data = load_data(parse(""))
    assert data.columns == ("velocity_1000_km_s",)
    assert 9 < data.x.min() < data.x.max() < 35 and "1000 km/s" in data.description
    with pytest.raises(ConfigError, match="galaxy_velocities") as caught:
        parse_config(tomllib.loads(
            'name = "s"\n[data]\nsource = "builtin"\nname = "old_faithful"\n'
            "thousands = true\n[model]\nn_components = 2\n"))
    assert caught.value.key == "data.thousands"


@pytest.mark.parametrize(("text", "key", "words"), [
    ("[selection]\nks = [2, 83]\n", "selection.ks", "more components than points \\(82\\)"),
    ("[selection]\nks = [2, 70]\nvalidation_fraction = 0.25\n",
     "selection.validation_fraction", "leaves 62 for training"),
    ("[selection]\n[selection.occupied]\nk_max = 90\n", "selection.occupied.k_max",
     "exceeds the number of points \\(82\\)"),
])
def test_the_ks_are_checked_against_the_data(text, key, words):
    config = parse(text)
    with pytest.raises(ConfigError, match=words) as caught:
        check_selection(config, load_data(config))
    assert caught.value.key == key


def test_too_many_components_fail_before_any_fit(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text(BASE + "[selection]\nks = [1, 100]\n")
    status, out, err = run(["run", str(path), "--output-dir", str(tmp_path), "--quiet"])
    assert status == 2 and out == ""
    assert err.startswith("bayes-gmm: error: selection.ks:") and "82" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------------------
# The CLI end to end, at smoke sizes

SMOKE = {
    "n_init = 5": "n_init = 1",
    "ks = 6": "ks = 3",
    "num_chains = 4": "num_chains = 2",
    "num_warmup = 500": "num_warmup = 20",
    "num_samples = 1000": "num_samples = 30",
    "k_max = 10": "k_max = 4",
    "num_warmup = 2000": "num_warmup = 30",
    "num_samples = 5000": "num_samples = 40",
    "log_posterior_figure = true": "log_posterior_figure = false",
    "n_samples = 300": "n_samples = 90",
}


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("selection")
    text = SYNTHETIC.read_text()
    for shipped, smoke in SMOKE.items():
        assert shipped in text, shipped
        text = text.replace(shipped, smoke)
    # A reference range, as configs/choosing_k.toml has for the galaxy velocities.
    text = text.replace("[selection.occupied]\n", "[selection.occupied]\nreference = [2, 3]\n")
    path = tmp_path / SYNTHETIC.name
    path.write_text(text)
    references = []  # the reference the writer passes to the figure

    def spy(*args, **kwargs):
        references.append(kwargs.get("reference"))
        return drawn(*args, **kwargs)

    drawn = plots.occupied_components_figure
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "occupied_components_figure", spy)
        status, out, err = run(["run", str(path), "--output-dir", str(tmp_path)])
    return status, out, err, tmp_path / "choosing_k_synthetic", references


def test_the_cli_writes_the_selection_files(synthetic_run):
    status, _, err, folder, _ = synthetic_run
    assert status == 0, err
    for name in ("selection.csv", "selection.png", "selection.json",
                 "occupied_components.csv", "occupied_components.png", "map.json"):
        assert (folder / name).is_file(), name
    assert not list(folder.parent.glob(".*partial"))
    table = pd.read_csv(folder / "selection.csv", index_col="k")
    assert list(table.index) == [1, 2, 3]
    for column in ("bic", "icl", "aic", "heldout_log_likelihood", "elpd_loo", "loo_weight"):
        assert np.isfinite(table[column]).all(), column
    for criterion in CRITERIA:
        assert table[f"best_{criterion}"].sum() == 1
    record = json.loads((folder / "selection.json").read_text())
    assert record["best"] == {c: int(table.index[table[f"best_{c}"]][0]) for c in CRITERIA}
    assert record["n_samples"] == 90 and record["n_validation"] == 22
    occupied = pd.read_csv(folder / "occupied_components.csv", index_col="n_occupied")
    assert list(occupied.index) == [1, 2, 3, 4]
    assert list(occupied.columns) == ["probability", "chain_0", "chain_1"]
    np.testing.assert_allclose(occupied.sum(), 1.0)
    assert record["occupied"]["mode"] == int(occupied["probability"].idxmax())
    assert len(record["occupied"]["chain_modes"]) == 2
    assert "selection.json" in json.loads((folder / "map.json").read_text())["files"]


def test_the_main_fit_keeps_model_n_components(synthetic_run):
    _, _, _, folder, _ = synthetic_run
    assert json.loads((folder / "map.json").read_text())["n_components"] == 3


def test_the_summary_names_the_best_k(synthetic_run):
    _, out, _, folder, _ = synthetic_run
    record = json.loads((folder / "selection.json").read_text())
    assert "choosing K     K = 1..3 (full) in " in out
    names = {"bic": "BIC", "icl": "ICL", "aic": "AIC", "heldout": "held-out", "loo": "LOO"}
    for criterion, name in names.items():
        best, runner_up = record["best"][criterion], record["runner_up"][criterion]
        assert best != runner_up and {best, runner_up} <= {1, 2, 3}
        assert re.search(rf"\n    {name} +best K={best} \(.*\); runner-up K={runner_up}, "
                         r"[+-]\d", out), out
    assert re.search(r"\n    LOO .*; runner-up K=\d, -\d+\.\d \(se \d+\.\d\)\n", out), out
    assert f"occupied     mode {record['occupied']['mode']}" in out
    assert "selection.csv" in out


def test_the_reference_range_is_drawn_and_summarised(synthetic_run):
    status, _, err, folder, references = synthetic_run
    assert status == 0, err
    assert references == [(2, 3)]  # shaded on occupied_components.png
    record = json.loads((folder / "selection.json").read_text())["occupied"]
    occupied = pd.read_csv(folder / "occupied_components.csv", index_col="n_occupied")
    assert record["reference"] == [2, 3]
    np.testing.assert_allclose(record["reference_probability"],
                               occupied["probability"].loc[2:3].sum())


# --------------------------------------------------------------------------------------
# A model search over covariance types: config -> select_k -> results folder and summary.
# select_k is replaced by a table of its shape (its own tests are in test_selection.py).

SEARCH = BASE + """
[output]
iteration_figures = false
log_posterior_figure = false
[selection]
ks = 4
covariance_type = ["full", "diag", "spherical", "tied"]
criteria = ["bic", "icl", "loo"]
"""


@pytest.fixture(scope="module")
def model_search(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("search")
    path = tmp_path / "search.toml"
    path.write_text(SEARCH)
    calls = []

    def select_k(x, ks, **kwargs):
        calls.append({"n_samples": len(x), "ks": list(ks), **kwargs})
        return selection_table(types=kwargs["covariance_type"], ks=tuple(ks),
                               best_at=("full", 2), criteria=kwargs["criteria"],
                               n_samples=len(x))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(selection, "select_k", select_k)
        status, out, err = run(["run", str(path), "--output-dir", str(tmp_path)])
    return status, out, err, tmp_path / "s", calls


def test_the_list_of_covariance_types_reaches_select_k(model_search):
    status, _, err, _, calls = model_search
    assert status == 0, err
    (call,) = calls
    assert call["covariance_type"] == TYPES and call["ks"] == [1, 2, 3, 4]
    assert call["criteria"] == ("bic", "icl", "loo") and call["n_samples"] == 82


def test_the_results_folder_of_a_model_search(model_search):
    _, _, _, folder, _ = model_search
    table = pd.read_csv(folder / "selection.csv")
    assert list(table.columns[:2]) == ["covariance_type", "k"]
    assert len(table) == 16 and list(dict.fromkeys(table["covariance_type"])) == TYPES
    assert (folder / "selection.png").stat().st_size > 0
    record = json.loads((folder / "selection.json").read_text())
    expected = selection_table(best_at=("full", 2), criteria=("bic", "icl", "loo"))
    for criterion in ("bic", "icl", "loo"):
        best, runner_up = expected.attrs["best"][criterion], expected.attrs["runner_up"][criterion]
        assert record["best"][criterion] == {"covariance_type": best[0], "k": best[1]}
        assert record["runner_up"][criterion] == {"covariance_type": runner_up[0],
                                                  "k": runner_up[1]}
        column = {"bic": "bic", "icl": "icl", "loo": "elpd_loo"}[criterion]
        entry = record["ranking"][criterion]
        assert entry["best"]["value"] == expected.loc[best, column]
        assert entry["runner_up"]["difference"] == pytest.approx(
            expected.loc[runner_up, column] - expected.loc[best, column])
    assert record["ranking"]["bic"]["better"] == "lower"
    assert record["ranking"]["loo"]["better"] == "higher"
    assert record["covariance_types"] == TYPES and record["ks"] == [1, 2, 3, 4]
    assert record["settings"]["covariance_type"] == TYPES


def test_the_summary_names_winner_and_runner_up_of_a_model_search(model_search):
    _, out, _, _, _ = model_search
    assert "choosing K     K = 1..4 x full, diag, spherical, tied (16 models) in " in out
    # BIC 2300 at full K=2; full K=1 and K=3 are 10 behind (the first of them is named).
    assert "    BIC          best full K=2 (BIC 2300.0); runner-up full K=1, +10.0\n" in out
    assert "    ICL          best full K=2 (ICL 2310.0); runner-up full K=1, +5.0\n" in out
    assert "    LOO          best full K=2 (elpd -1150.0); runner-up full K=1, -3.0\n" in out


def test_the_summary_of_one_covariance_type():
    table = selection_table(types=["diag"], best_at=("diag", 3), criteria=("bic", "loo"))
    table["loo_elpd_diff"] = table["elpd_loo"] - table["elpd_loo"].max()  # arviz_stats
    table["loo_dse"] = [1.5, 1.2, 0.0, 1.25]
    ranking = selection_ranking(table)
    assert ranking["bic"]["best"] == {"covariance_type": "diag", "k": 3, "value": 2300.0}
    assert ranking["bic"]["runner_up"] == {"covariance_type": "diag", "k": 2, "value": 2310.0,
                                           "difference": 10.0}
    assert ranking["loo"]["runner_up"]["dse"] == 1.2  # arviz_stats' se of the difference
    summary = {"ks": [1, 2, 3, 4], "covariance_types": ["diag"], "ranking": ranking,
               "occupied": None, "warnings": []}
    lines = _selection_lines(SelectionResult(table, None, summary, 1.23))
    assert lines == [
        "  choosing K     K = 1..4 (diag) in 1.2 s",
        "    BIC          best K=3 (BIC 2300.0); runner-up K=2, +10.0",
        "    LOO          best K=3 (elpd -1150.0); runner-up K=2, -3.0 (se 1.2)",
    ]
    one = selection_table(types=["full"], ks=(2,), best_at=("full", 2), criteria=("heldout",))
    (entry,) = selection_ranking(one).values()
    assert entry["runner_up"] is None
    summary = {**summary, "ranking": {"heldout": entry}, "ks": [2]}
    lines = _selection_lines(SelectionResult(one, None, summary, 0.5))
    assert lines[1] == ("    held-out     best K=2 (log density per point -2.0000); "
                        "no runner-up (one model)")
