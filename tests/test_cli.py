"""The command line end to end: the walkthrough config gives a complete results folder;
errors are one line on stderr with a non-zero status; results are never overwritten
without --overwrite and never left half-written."""

import contextlib
import io
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayes_gmm
from bayes_gmm import experiment
from bayes_gmm.cli import main
from bayes_gmm.datasets import two_gaussians

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "configs" / "em_walkthrough.toml"


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
