"""The command line end to end: the walkthrough config gives a complete results folder,
the Old Faithful config (at smoke sizes) the MAP and its posterior side by side; errors are
one line on stderr with a non-zero status; results are never overwritten without
--overwrite and never left half-written."""

import contextlib
import io
import json
import math
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayes_gmm
from bayes_gmm import BayesianGMM, cli, experiment
from bayes_gmm.cli import main
from bayes_gmm.config import load_config
from bayes_gmm.datasets import two_gaussians
from bayes_gmm.diagnostics import load_datatree

pytestmark = pytest.mark.float32_pass

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "configs" / "em_walkthrough.toml"
OLD_FAITHFUL = ROOT / "configs" / "old_faithful.toml"
# The shipped sizes and the smoke sizes the suite runs instead.
SMOKE = {"num_chains": (4, 2), "num_warmup": (500, 50), "num_samples": (1000, 50)}
COMPARISON_COLUMNS = ["map", "mean", "sd", "median", "hdi_lower", "hdi_upper", "map_in_hdi",
                      "z", "r_hat", "ess_bulk", "ess_tail", "frac_draws_above_map"]
DIAGNOSTICS_COLUMNS = ["r_hat", "ess_bulk", "ess_tail", "n_divergences", "sampling_time_s"]
# A step's time as bayes_gmm.progress writes it: "12.3 s" below a minute, "1 min 05 s"
# from there (a loaded machine takes over a minute for a step that usually takes seconds).
DURATION = r"(?:\d+\.\d s|\d+ min \d\d s)"


def strict_json(path):
    """map.json parsed so that NaN or Infinity in it fail the test."""
    def reject(constant):
        raise AssertionError(f"map.json holds {constant}")

    return json.loads(Path(path).read_text(), parse_constant=reject)


def numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["run", str(WALKTHROUGH), "--output-dir", str(out)])
    return status, out, out / "em_walkthrough", stdout.getvalue()


def test_walkthrough_succeeds_and_summarises(walkthrough):
    status, _, folder, printed = walkthrough
    assert status == 0
    assert "converged" in printed and "NOT converged" not in printed
    assert "200 points x 2 features" in printed
    assert str(folder) in printed
    for line in ("K = 2", "covariance_type = 'full'", "log posterior", "component"):
        assert line in printed


def test_walkthrough_writes_the_results_folder(walkthrough):
    _, out, folder, _ = walkthrough
    record = strict_json(folder / "map.json")
    figures = sorted(p.name for p in (folder / "iterations").iterdir())
    # One figure per EM state: the start (iteration 0) and after each of the iterations.
    assert figures == [f"iteration_{t:03d}.png" for t in range(record["iterations"] + 1)]
    assert 5 <= record["iterations"] <= 25 and record["converged"] is True
    for name in ("log_posterior.png", "iterations_grid.png", "config.toml"):
        assert (folder / name).stat().st_size > 0
    assert sorted(record["files"]) == sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
    )
    # Nothing temporary is left beside or inside it.
    assert [p.name for p in out.iterdir()] == ["em_walkthrough"]
    assert not [p for p in folder.rglob(".*")]


def test_map_json_contents(walkthrough):
    record = strict_json(walkthrough[2] / "map.json")
    assert all(math.isfinite(v) for v in numbers(record))
    weights = np.array(record["weights"])
    assert weights.shape == (2,) and abs(weights.sum() - 1) < 1e-5
    assert np.array(record["means"]).shape == (2, 2)
    assert np.array(record["covariances"]).shape == (2, 2, 2)
    history = record["log_posterior_history"]
    assert len(history) == record["iterations"] + 1
    assert history[-1] == pytest.approx(record["log_posterior"])
    assert np.all(np.diff(history) >= -1e-3 * abs(history[-1]))  # EM never goes down
    assert set(record["prior"]) == {
        "weight_concentration_prior", "mean_prior", "mean_precision_prior",
        "degrees_of_freedom_prior", "covariance_prior",
    }
    assert record["prior"]["mean_precision_prior"] == pytest.approx(0.01)
    assert record["seed"] == record["config"]["seed"] == 14
    assert record["bayes_gmm_version"] == bayes_gmm.__version__
    assert record["config"]["model"]["init_params"] == "random"
    assert record["config_file"] == str(WALKTHROUGH)
    env = record["environment"]
    assert env["jax"] and env["numpy"] == np.__version__ and env["device"]
    assert record["data"]["agreement_with_true_labels"] > 0.95
    assert record["config"]["posterior"] is None
    assert not {"posterior.json", "posterior.nc", "comparison.csv"} & set(record["files"])


def write_small_config(folder, name="small", extra=""):
    """A CSV experiment (a relative path) that fits in a moment."""
    x, _ = two_gaussians(seed=1, n_samples=40, separation=6.0)
    (folder / "data").mkdir(exist_ok=True)
    pd.DataFrame(x, columns=["u", "v"]).to_csv(folder / "data" / "points.csv", index=False)
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""
        name = "{name}"
        seed = 0
        [data]
        source = "csv"
        path = "data/points.csv"
        [model]
        n_components = 2
        max_iter = 5
        [output]
        iteration_figures = false
    """) + extra)
    return path


def test_existing_results_are_kept_without_overwrite(tmp_path, capsys):
    config = write_small_config(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == ""  # --quiet
    marker = out / "small" / "marker.txt"
    marker.write_text("an earlier result")

    assert main(["run", str(config), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "--output-dir" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert marker.read_text() == "an earlier result"

    assert main(["run", str(config), "--output-dir", str(out), "--overwrite"]) == 0
    assert not marker.exists()
    record = strict_json(out / "small" / "map.json")
    assert record["data"]["columns"] == ["u", "v"]
    assert not (out / "small" / "iterations").exists()
    assert [p.name for p in out.iterdir()] == ["small"]


def test_malformed_config_exits_2_naming_the_key(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\n[data]\nsource = "synthetic"\n[model]\nn_component = 2\n')
    assert main(["run", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "model.n_component" in captured.err and "n_components" in captured.err
    assert captured.err.startswith("bayes-gmm: error: ")
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert captured.out == ""
    assert not (tmp_path / "out").exists()


def test_missing_config_file_and_usage_errors(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["run"]) == 2
    assert "CONFIG" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert bayes_gmm.__version__ in capsys.readouterr().out


def test_bad_data_exits_1(tmp_path, capsys):
    config = write_small_config(tmp_path)
    text = config.read_text().replace('path = "data/points.csv"',
                                      'path = "data/points.csv"\ncolumns = ["u", "w"]')
    config.write_text(text)
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "data:" in err and "['w'] not found" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "small").exists()


def test_plotted_columns_are_checked_before_fitting(tmp_path, capsys):
    config = write_small_config(tmp_path)
    config.write_text(config.read_text() + "features = [0, 5]\n")  # under [output]
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "output.features" in err and "n_features = 2" in err and "'u', 'v'" in err


def test_non_finite_results_are_never_written(tmp_path, capsys, monkeypatch):
    real_fit = experiment.fit

    def fit_gone_wrong(config, data):
        gmm, messages = real_fit(config, data)
        gmm.lower_bound_ = float("nan")
        return gmm, messages

    monkeypatch.setattr(experiment, "fit", fit_gone_wrong)
    config = write_small_config(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "non-finite" in err and "map.json.log_posterior" in err
    assert not out.exists() or list(out.iterdir()) == []


def test_tables_write_undefined_as_empty_and_refuse_infinity():
    table = pd.DataFrame({"r_hat": [1.0, np.nan], "ess_bulk": [100.0, 50.0]},
                         index=pd.Index(["a", "b"], name="parameter"))
    assert experiment._csv(table, "t.csv").decode() == (
        "parameter,r_hat,ess_bulk\na,1,100\nb,,50\n")
    table.loc["b", "ess_bulk"] = np.inf
    with pytest.raises(ValueError, match=r"infinite value in t.csv \(row 'b', column "
                                         r"'ess_bulk'\); no results were written"):
        experiment._csv(table, "t.csv")


def test_an_interrupted_run_leaves_nothing(tmp_path, capsys, monkeypatch):
    real_save = experiment._save
    saved = []

    def save_then_interrupt(fig, path, out):
        real_save(fig, path, out)
        saved.append(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "_save", save_then_interrupt)
    config = write_small_config(tmp_path)  # its one figure: the log-posterior trace
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out)]) == 130
    assert saved and "interrupted" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # the staging folder is gone, no "small" appeared


# --------------------------------------------------------------------------------------
# Old Faithful: MAP and posterior


@pytest.fixture(scope="module")
def old_faithful(tmp_path_factory):
    """The shipped config with only the [posterior] sizes lowered, run from the shell's
    entry point (progress bar on)."""
    folder = tmp_path_factory.mktemp("old_faithful")
    text = OLD_FAITHFUL.read_text()
    for key, (shipped, smoke) in SMOKE.items():
        text, count = re.subn(rf"^{key} = {shipped}\b", f"{key} = {smoke}", text, flags=re.M)
        assert count == 1, f"configs/old_faithful.toml no longer sets {key} = {shipped}"
    config = folder / "old_faithful.toml"
    config.write_text(text)
    out = folder / "results"
    stdout, stderr = io.StringIO(), io.StringIO()
    # As at a user's terminal: neither CI nor PYTEST_XDIST_WORKER set.
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("CI", raising=False)
        patch.delenv("PYTEST_XDIST_WORKER", raising=False)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main(["run", str(config), "--output-dir", str(out)])
    return status, out / "old_faithful", stdout.getvalue(), stderr.getvalue()


def test_old_faithful_succeeds_with_progress_and_summary(old_faithful):
    status, folder, printed, err = old_faithful
    assert status == 0, err
    assert "100/100" in err  # the NUTS progress bar: 50 warm-up + 50 draws
    # The progress lines: the bar between the announcement and the time of NUTS.
    nuts = "[bayes-gmm] sampling the posterior with NUTS (2 chains x 50 draws after 50 warm-up)"
    fitting = rf"^\[bayes-gmm\] fitting the MAP \(K=2, full, 5 starts\)\.\.\. {DURATION}$"
    assert re.search(fitting, err, flags=re.M), err
    assert f"{nuts}...\n" in err and re.search(rf"^{re.escape(nuts)}: done in {DURATION}$",
                                                err, flags=re.M)
    assert err.index(f"{nuts}...") < err.index("100/100") < err.index(f"{nuts}: done")
    assert "272 points x 2 features (eruptions, waiting)" in printed
    assert "posterior      nuts: 2 chains x 50 draws after 50 warm-up" in printed
    assert re.search(r"diagnostics  max R-hat \d\.\d{3}, min ESS \d+ bulk, \d+ tail, "
                     r"\d+ divergences", printed), printed
    assert re.search(r"MAP          inside the 89% HDI for \d+ of 12 parameters", printed)
    assert "posterior.nc, comparison.csv, diagnostics.csv" in printed


def test_old_faithful_writes_every_file(old_faithful):
    _, folder, _, _ = old_faithful
    expected = {"map.json", "config.toml", "posterior.json", "posterior.nc", "comparison.csv",
                "diagnostics.csv", "map_vs_posterior.png", "forest.png", "trace.png",
                "trace_covariances.png", "log_posterior.png", "iterations_grid.png"}
    written = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert expected <= written
    assert all((folder / name).stat().st_size > 0 for name in expected)
    record = strict_json(folder / "map.json")
    assert sorted(record["files"]) == sorted(written)
    assert record["config"]["posterior"]["num_samples"] == 50
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_old_faithful_posterior_file_loads_back(old_faithful):
    _, folder, _, _ = old_faithful
    tree = load_datatree(folder / "posterior.nc")
    assert set(tree.children) == {"posterior", "sample_stats", "log_likelihood", "log_prior",
                                  "observed_data", "map"}
    posterior = tree["posterior"]
    assert (posterior.sizes["chain"], posterior.sizes["draw"]) == (2, 50)
    assert list(posterior["feature"].values) == ["eruptions", "waiting"]
    assert tree["log_likelihood"]["x"].shape == (2, 50, 272)
    assert "diverging" in tree["sample_stats"]
    assert tree.attrs["method"] == "nuts" and tree.attrs["aligned"] == 1
    assert tree.attrs["covariance_type"] == "full" and tree.attrs["init_jitter"] == 0.1
    record = strict_json(folder / "map.json")
    np.testing.assert_allclose(tree["map"]["weights"].values, record["weights"], rtol=1e-6)


def test_old_faithful_tables(old_faithful):
    _, folder, _, _ = old_faithful
    comparison = pd.read_csv(folder / "comparison.csv", index_col="parameter")
    assert list(comparison.columns) == COMPARISON_COLUMNS
    assert list(comparison.index) == [
        "weights[0]", "weights[1]", "means[0, eruptions]", "means[0, waiting]",
        "means[1, eruptions]", "means[1, waiting]",
        "covariances[0, eruptions, eruptions]", "covariances[0, eruptions, waiting]",
        "covariances[0, waiting, waiting]", "covariances[1, eruptions, eruptions]",
        "covariances[1, eruptions, waiting]", "covariances[1, waiting, waiting]", "lp"]
    parameters = comparison.drop(index="lp")
    assert parameters["frac_draws_above_map"].isna().all()  # defined for lp only
    assert np.all(parameters["hdi_lower"] <= parameters["hdi_upper"])
    # 272 points pin the parameters down: the MAP lies inside most 89% intervals, and no
    # draw has a higher log posterior than the mode EM found.
    assert parameters["map_in_hdi"].mean() >= 0.75
    assert comparison.loc["lp", "frac_draws_above_map"] == 0.0

    table = pd.read_csv(folder / "diagnostics.csv", index_col="parameter")
    assert list(table.columns) == DIAGNOSTICS_COLUMNS
    assert list(table.index) == list(comparison.index) + [
        "log_likelihood", "sorted_weights[0]", "sorted_weights[1]"]
    assert table["n_divergences"].nunique() == 1 and table["sampling_time_s"].nunique() == 1
    tree = load_datatree(folder / "posterior.nc")
    # The time is a fact of the run: in run.json, not in the (reproducible) posterior file.
    run = strict_json(folder / "run.json")
    assert table["sampling_time_s"].iloc[0] == pytest.approx(run["sampling_time_s"]["nuts"])
    assert "sampling_time" not in tree.attrs and "created_at" not in tree.attrs
    assert table["n_divergences"].iloc[0] == int(tree["sample_stats"]["diverging"].sum())
    assert np.all(table[["r_hat", "ess_bulk", "ess_tail"]].notna())


def test_old_faithful_posterior_record(old_faithful):
    _, folder, printed, _ = old_faithful
    record = strict_json(folder / "posterior.json")
    assert all(math.isfinite(v) for v in numbers(record))
    assert record["method"] == "nuts" and list(record["methods"]) == ["nuts"]
    assert record["settings"]["num_chains"] == 2 and record["settings"]["hdi_prob"] == 0.89
    nuts = record["methods"]["nuts"]
    table = pd.read_csv(folder / "diagnostics.csv", index_col="parameter")
    comparison = pd.read_csv(folder / "comparison.csv", index_col="parameter")
    assert nuts["max_r_hat"] == pytest.approx(table["r_hat"].max())
    assert nuts["min_ess_bulk"] == pytest.approx(table["ess_bulk"].min())
    assert nuts["divergences"] == table["n_divergences"].iloc[0]
    assert nuts["map_in_hdi"] == comparison.drop(index="lp")["map_in_hdi"].sum()
    assert nuts["n_parameters"] == 12
    assert nuts["relabelled_fraction"] == 0.0
    # Two well-separated groups of eruptions: every NUTS draw keeps both components
    # above the 1 / N occupancy threshold.
    assert nuts["occupied_components"] == {"2": 1.0}
    assert nuts["files"][:3] == ["posterior.nc", "comparison.csv", "diagnostics.csv"]
    # Smoke sizes: 50 draws per chain cannot reach an ESS of 100 per chain, and says so.
    assert any("effective sample size" in note for note in nuts["notes"])
    assert all(note.split(":")[0] in printed for note in nuts["notes"])


GIBBS_ONE_CHAIN = """
method = "gibbs"
num_chains = 1
num_warmup = 10
num_samples = 20
log_likelihood = false
"""


def write_posterior_config(folder, posterior, covariance_type="diag"):
    config = write_small_config(folder, extra=f"[posterior]\n{textwrap.dedent(posterior)}")
    text = config.read_text().replace(
        "n_components = 2", f'n_components = 2\ncovariance_type = "{covariance_type}"')
    config.write_text(text)
    return config


def test_quiet_run_compares_methods(tmp_path, capsys, monkeypatch):
    calls = []
    real = BayesianGMM.sample_posterior

    def spy(self, X, method="nuts", **kwargs):
        calls.append((method, kwargs["progress_bar"]))
        return real(self, X, method, **kwargs)

    monkeypatch.setattr(BayesianGMM, "sample_posterior", spy)
    config = write_posterior_config(
        tmp_path, GIBBS_ONE_CHAIN + 'compare_methods = ["laplace"]\n')
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # no summary, no progress bar
    assert calls == [("gibbs", False), ("laplace", False)]

    folder = out / "small"
    record = strict_json(folder / "posterior.json")
    assert list(record["methods"]) == ["gibbs", "laplace"]
    gibbs, laplace = record["methods"]["gibbs"], record["methods"]["laplace"]
    # One chain: no R-hat (null in JSON, an empty field in the CSV), and a note saying why.
    assert gibbs["max_r_hat"] is None and gibbs["divergences"] is None
    assert "R-hat needs at least two chains (num_chains >= 2)." in gibbs["notes"]
    assert laplace["num_warmup"] is None and laplace["laplace_newton_steps"] >= 1
    for suffix, method in (("", "gibbs"), ("_laplace", "laplace")):
        tree = load_datatree(folder / f"posterior{suffix}.nc")
        assert tree.attrs["method"] == method and "log_likelihood" not in tree.children
        table = pd.read_csv(folder / f"diagnostics{suffix}.csv", index_col="parameter")
        assert list(table.columns) == DIAGNOSTICS_COLUMNS
        assert table["n_divergences"].isna().all()
        assert (folder / f"comparison{suffix}.csv").is_file()
        assert (folder / f"map_vs_posterior{suffix}.png").stat().st_size > 0
        assert (folder / f"trace{suffix}.png").is_file()
    assert empty_column(folder / "diagnostics.csv", "r_hat")
    for path in folder.glob("*.csv"):  # undefined is empty, never the text NaN
        assert "nan" not in path.read_text().lower(), path.name
    assert (folder / "forest.png").is_file()  # both methods in one forest plot
    files = strict_json(folder / "map.json")["files"]
    assert sorted(files) == sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                                   if p.is_file())


def test_progress_lines_name_each_step_and_quiet_silences_them(tmp_path, capsys):
    # The sizes of test_quiet_run_compares_methods: the compiled sampler is reused.
    config = write_posterior_config(tmp_path, GIBBS_ONE_CHAIN)
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out)]) == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    expected = [
        r"fitting the MAP \(K=2, diag\)",
        r"sampling the posterior with the Gibbs sampler \(1 chains x 20 draws after 10 "
        r"warm-up\)",
        r"drawing the EM figures \(1\)",  # the log-posterior trace
        r"writing the posterior draws, tables and figures",
    ]
    assert len(lines) == len(expected), err
    for line, words in zip(lines, expected, strict=True):
        assert re.fullmatch(rf"\[bayes-gmm\] {words}\.\.\. {DURATION}", line), line
    assert main(["run", str(config), "--output-dir", str(out), "--overwrite", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_a_progress_step_says_what_runs_and_how_it_ended(capsys):
    from bayes_gmm.progress import _duration, reporting, step

    # Every time a step can take matches the pattern the tests above expect.
    for seconds in (0.0, 2.44, 59.94, 59.96, 65.2, 3600.0):
        assert re.fullmatch(DURATION, _duration(seconds)), _duration(seconds)
    with step("silent unless reporting"):
        pass
    assert capsys.readouterr().err == ""
    with reporting():
        with step("fitting"):
            pass
        with step("sampling", shares_stream=True):
            print("a progress bar", file=sys.stderr)
        with pytest.raises(ValueError), step("failing"):
            raise ValueError("no")
        with pytest.raises(KeyboardInterrupt), step("sampling", shares_stream=True):
            raise KeyboardInterrupt
        with reporting(False), step("quiet inside"):
            pass
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"\[bayes-gmm\] fitting\.\.\. 0\.\d s", lines[0])
    assert lines[1:3] == ["[bayes-gmm] sampling...", "a progress bar"]
    assert re.fullmatch(r"\[bayes-gmm\] sampling: done in 0\.\d s", lines[3])
    assert re.fullmatch(r"\[bayes-gmm\] failing\.\.\. failed after 0\.\d s", lines[4])
    assert lines[5:] == ["[bayes-gmm] sampling...", "[bayes-gmm] sampling: interrupted"]


def test_nested_progress_steps_are_indented_and_end_the_outer_line(capsys):
    from bayes_gmm.progress import reporting, step

    with reporting():
        with step("choosing K"):
            with step("EM over the grid"):
                pass
            with pytest.raises(ValueError), step("LOO"):
                raise ValueError("no")
        with step("writing"):
            pass
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "[bayes-gmm] choosing K..."
    assert re.fullmatch(r"\[bayes-gmm\]   EM over the grid\.\.\. 0\.\d s", lines[1])
    assert re.fullmatch(r"\[bayes-gmm\]   LOO\.\.\. failed after 0\.\d s", lines[2])
    assert re.fullmatch(r"\[bayes-gmm\] choosing K: done in 0\.\d s", lines[3])
    assert re.fullmatch(r"\[bayes-gmm\] writing\.\.\. 0\.\d s", lines[4])
    assert len(lines) == 5


def empty_column(path, column):
    """Whether every value of the CSV column is an empty field."""
    values = pd.read_csv(path, keep_default_na=False)[column]
    return bool(len(values)) and set(values) == {""}


def test_posterior_without_figures_and_a_summary(tmp_path, capsys):
    # The sizes of test_quiet_run_compares_methods: the compiled sampler is reused.
    config = write_posterior_config(tmp_path, GIBBS_ONE_CHAIN)
    config.write_text(config.read_text().replace(
        "iteration_figures = false", "iteration_figures = false\nposterior_figures = false"))
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "posterior      gibbs: 1 chains x 20 draws after 10 warm-up, " in printed
    assert "max R-hat n/a (one chain)" in printed and "divergences" not in printed
    assert "note         R-hat needs at least two chains" in printed
    folder = out / "small"
    assert sorted(p.name for p in folder.glob("*.png")) == ["log_posterior.png"]
    assert (folder / "posterior.nc").is_file() and (folder / "comparison.csv").is_file()
    assert strict_json(folder / "posterior.json")["files"] == ["posterior.json"]


def test_summary_of_a_laplace_run():
    summary = {"num_chains": 4, "num_samples": 100, "num_warmup": None,
               "sampling_time_s": 1.26, "max_r_hat": 1.0012, "min_ess_bulk": 390.2,
               "min_ess_tail": 350.0, "divergences": None, "relabelled_fraction": 0.25,
               "hdi_prob": 0.9, "map_in_hdi": 5, "n_parameters": 6, "lp_map": -10.0,
               "lp_posterior_mean": None, "notes": ["a note."], "warnings": []}
    lines = cli._posterior_lines("laplace", summary)
    assert lines == [
        "  posterior      laplace: 4 chains x 100 draws, 1.3 s",
        "    diagnostics  max R-hat 1.001, min ESS 390 bulk, 350 tail, 25.0% of draws "
        "relabelled",
        "    MAP          inside the 90% HDI for 5 of 6 parameters; log posterior -10.00 "
        "(posterior mean n/a)",
        "    note         a note.",
    ]


def test_failed_sampling_writes_nothing(tmp_path, capsys, monkeypatch):
    def fail(self, X, method="nuts", **kwargs):
        raise FloatingPointError("The Laplace approximation failed: test.")

    monkeypatch.setattr(BayesianGMM, "sample_posterior", fail)
    config = write_posterior_config(tmp_path, 'method = "laplace"\n')
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Laplace approximation failed" in err and "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_bad_posterior_section_exits_2_naming_the_key(tmp_path, capsys):
    config = write_posterior_config(tmp_path, 'method = "hmc"\n')
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "posterior.method" in err and "'nuts', 'gibbs', 'laplace'" in err
    assert not (tmp_path / "out").exists()


MAP_VS_POSTERIOR_SMALL = ROOT / "configs" / "map_vs_posterior_small.toml"


def test_subsample_keeps_the_seeded_rows(tmp_path, capsys):
    config = tmp_path / "subsample.toml"
    config.write_text(textwrap.dedent("""
        name = "subsample"
        seed = 5
        [data]
        source = "builtin"
        name = "old_faithful"
        subsample = 20
        [model]
        n_components = 2
        max_iter = 5
        [output]
        iteration_figures = false
    """))
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out)]) == 0
    assert "built-in old_faithful, 20 of 272 rows (seed 5): 20 points x 2 features" in (
        capsys.readouterr().out)
    record = strict_json(out / "subsample" / "map.json")
    rows = experiment.subsample_rows(272, 20, 5)  # seed: the experiment's, as none is given
    assert record["data"]["subsample_rows"] == rows.tolist()
    assert record["data"]["n_samples"] == 20 and record["config"]["data"]["subsample"] == 20
    assert list(rows) == sorted(set(rows)) and len(rows) == 20  # distinct, in data order

    data = experiment.load_data(load_config(config))
    full = bayes_gmm.datasets.old_faithful().to_numpy()
    np.testing.assert_array_equal(data.x, full[rows])
    assert data.rows.tolist() == rows.tolist()


def test_subsample_rows_are_reproducible_and_checked():
    a, b = experiment.subsample_rows(272, 20, 1), experiment.subsample_rows(272, 20, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, experiment.subsample_rows(272, 20, 2))
    np.testing.assert_array_equal(experiment.subsample_rows(5, 5, 0), np.arange(5))
    with pytest.raises(ValueError, match=r"subsample = 300 is more rows than the data have "
                                         r"\(272\); ask for at most 272"):
        experiment.subsample_rows(272, 300, 0)


def test_subsample_larger_than_the_data_exits_1(tmp_path, capsys):
    config = write_small_config(tmp_path)  # 40 rows
    config.write_text(config.read_text().replace('path = "data/points.csv"',
                                                 'path = "data/points.csv"\nsubsample = 41'))
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "data: subsample = 41 is more rows than the data have (40)" in err
    assert not (tmp_path / "out" / "small").exists()


def test_map_vs_posterior_small_writes_a_file_set_per_method(tmp_path, capsys):
    """The shipped small-data config at smoke sizes, Gibbs and Laplace in place of
    NUTS and Gibbs (NUTS is run end to end by the Old Faithful fixture): the main method's
    files under the plain names, the others' with their suffix, one forest plot."""
    text = MAP_VS_POSTERIOR_SMALL.read_text()
    for key, shipped, smoke in (("num_chains", "4", "2"), ("num_warmup", "500", "10"),
                                ("num_samples", "1000", "20"), ("method", '"nuts"', '"gibbs"'),
                                ("compare_methods", r'\["gibbs", "laplace"\]', '["laplace"]')):
        text, count = re.subn(rf"^{key} = {shipped}", f"{key} = {smoke}", text, flags=re.M)
        assert count == 1, f"{MAP_VS_POSTERIOR_SMALL.name} no longer sets {key} = {shipped}"
    config = tmp_path / "small.toml"
    config.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out), "--quiet"]) == 0
    folder = out / "map_vs_posterior_small"
    per_method = ["posterior{}.nc", "comparison{}.csv", "diagnostics{}.csv",
                  "map_vs_posterior{}.png", "trace{}.png", "trace_covariances{}.png"]
    expected = {"map.json", "config.toml", "posterior.json", "forest.png", "log_posterior.png"}
    for suffix in ("", "_laplace"):
        expected |= {name.format(suffix) for name in per_method}
    files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert expected <= files, expected - files
    assert not {f for f in files - expected if "gibbs" in f or "nuts" in f}  # no third set
    record = strict_json(folder / "posterior.json")
    assert record["method"] == "gibbs" and list(record["methods"]) == ["gibbs", "laplace"]
    assert record["methods"]["laplace"]["files"][0] == "posterior_laplace.nc"
    assert load_datatree(folder / "posterior_laplace.nc").attrs["method"] == "laplace"
    assert strict_json(folder / "map.json")["data"]["n_samples"] == 20
