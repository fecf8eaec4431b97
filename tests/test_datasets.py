"""The data sets: shipped real data read correctly, synthetic draws reproducible from a seed,
CSV loading with messages that name the file and the column."""

import numpy as np
import pandas as pd
import pytest

from bayes_gmm import datasets

pytestmark = pytest.mark.float32_pass


def test_old_faithful_matches_its_readme():
    frame = datasets.old_faithful()
    assert frame.shape == (272, 2)
    assert list(frame.columns) == ["eruptions", "waiting"]
    np.testing.assert_allclose(frame.mean().to_numpy(), [3.487783, 70.897059], atol=1e-6)


def test_galaxy_velocities_in_km_s_and_thousands():
    raw = datasets.galaxy_velocities()
    scaled = datasets.galaxy_velocities(thousands=True)
    assert raw.shape == scaled.shape == (82, 1)
    assert list(raw.columns) == ["velocity_km_s"]
    assert list(scaled.columns) == ["velocity_1000_km_s"]
    np.testing.assert_allclose(scaled.iloc[:, 0], raw.iloc[:, 0] / 1000)
    assert 9 < scaled.iloc[:, 0].min() < scaled.iloc[:, 0].max() < 35


def test_load_builtin_by_name_and_unknown_name():
    assert datasets.load_builtin("old_faithful").shape == (272, 2)
    with pytest.raises(ValueError, match=r"name must be one of .*'iris'.*load_csv"):
        datasets.load_builtin("iris")


def test_two_gaussians_reproducible_from_one_seed():
    x, labels = datasets.two_gaussians(seed=3, n_samples=120)
    x2, labels2 = datasets.two_gaussians(seed=3, n_samples=120)
    x3, _ = datasets.two_gaussians(seed=4, n_samples=120)
    assert x.shape == (120, 2) and labels.shape == (120,)
    assert x.dtype == np.float64 and labels.dtype == np.int64
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(labels, labels2)
    assert not np.array_equal(x, x3)
    assert set(np.unique(labels)) == {0, 1}


def test_two_gaussians_clusters_have_the_stated_centres():
    x, labels = datasets.two_gaussians(seed=0, n_samples=4000, separation=6.0)
    np.testing.assert_allclose(x[labels == 0].mean(0), [0.0, 0.0], atol=0.1)
    np.testing.assert_allclose(x[labels == 1].mean(0), [6.0, 3.0], atol=0.1)
    # Different shapes: the second cluster is narrower and negatively correlated.
    assert np.cov(x[labels == 1].T)[0, 1] < 0 < np.cov(x[labels == 0].T)[0, 0]


def test_synthetic_mixture_draws_the_given_mixture():
    weights = [0.2, 0.3, 0.5]
    means = [[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 5.0]]
    covariances = [np.eye(3), 0.5 * np.eye(3), np.diag([1.0, 2.0, 0.5])]
    x, labels = datasets.synthetic_mixture(7, 6000, weights, means, covariances)
    assert x.shape == (6000, 3)
    np.testing.assert_allclose(np.bincount(labels) / 6000, weights, atol=0.02)
    np.testing.assert_allclose(x[labels == 2].mean(0), means[2], atol=0.1)
    np.testing.assert_allclose(np.cov(x[labels == 2].T), covariances[2], atol=0.15)
    again, _ = datasets.synthetic_mixture(7, 6000, weights, means, covariances)
    np.testing.assert_array_equal(x, again)


@pytest.mark.parametrize(
    "weights, means, covariances, message",
    [
        ([0.5, 0.6], [[0, 0], [1, 1]], [np.eye(2)] * 2, "sum to 1"),
        ([0.5, 0.5], [[0, 0]], [np.eye(2)] * 2, r"means must have shape"),
        ([0.5, 0.5], [[0, 0], [1, 1]], [np.eye(2)], r"covariances must have shape"),
        ([0.5, 0.5], [[0, 0], [1, 1]], [np.eye(2), -np.eye(2)], r"covariances\[1\]"),
        ([0.5, 0.5], [[0, np.nan], [1, 1]], [np.eye(2)] * 2, "means must be finite"),
    ],
)
def test_synthetic_mixture_rejects_bad_parameters(weights, means, covariances, message):
    with pytest.raises(ValueError, match=message):
        datasets.synthetic_mixture(0, 10, weights, means, covariances)


def test_synthetic_mixture_rejects_bad_n_samples():
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1; got 0"):
        datasets.synthetic_mixture(0, 0, [1.0], [[0.0]], [[[1.0]]])


def test_load_csv_reads_and_selects_columns(tmp_path):
    path = tmp_path / "points.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4, 5, 6], "c": [7.0, 8.0, 9.0]}).to_csv(
        path, index=False
    )
    frame = datasets.load_csv(path)
    assert list(frame.columns) == ["a", "b", "c"]
    assert (frame.dtypes == np.float64).all()
    picked = datasets.load_csv(str(path), columns=["c", "a"])
    np.testing.assert_array_equal(picked.to_numpy(), [[7, 1], [8, 2], [9, 3]])


def test_load_csv_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CSV file not found: '.*nowhere\.csv'"):
        datasets.load_csv(tmp_path / "nowhere.csv")


def test_load_csv_names_the_non_numeric_column(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("x,kind\n1.0,red\n2.0,blue\n")
    with pytest.raises(ValueError, match=r"column 'kind' of .*mixed\.csv is not numeric"):
        datasets.load_csv(path)
    assert datasets.load_csv(path, columns=["x"]).shape == (2, 1)


def test_load_csv_missing_column_and_missing_value(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("x,y\n1.0,2.0\n3.0,\n")
    with pytest.raises(ValueError, match=r"columns \['z'\] not found .* \['x', 'y'\]"):
        datasets.load_csv(path, columns=["z"])
    with pytest.raises(ValueError, match=r"column 'y' .* missing or infinite value \(data row 2\)"):
        datasets.load_csv(path)
