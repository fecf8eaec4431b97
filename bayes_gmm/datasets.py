"""Data to fit: synthetic mixtures drawn from one seed, the shipped real sets, and CSV files.

This module is where data enter the project. Synthetic generators return NumPy arrays
together with the true labels, so that a fit can be compared with the truth; the real sets
(Old Faithful, the galaxy velocities; see ``bayes_gmm/data/README.md``) and user CSV files
come back as pandas DataFrames, whose column names the CLI records with the results.
Everything random is drawn from ``numpy.random.default_rng(seed)``: one integer gives the
same data on every machine. Nothing here knows about JAX or the model.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_gmm.checks import as_float_array

BUILTIN = ("old_faithful", "galaxy_velocities")


def synthetic_mixture(seed, n_samples, weights, means, covariances):
    """Draw from a Gaussian mixture with full covariances.

    Parameters
    ----------
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same draw.
    n_samples : int
        N, the number of points.
    weights : array of shape (n_components,)
        Mixing proportions; non-negative, summing to one.
    means : array of shape (n_components, n_features)
    covariances : array of shape (n_components, n_features, n_features)
        Symmetric positive definite matrices.

    Returns
    -------
    x : ndarray of shape (n_samples, n_features), float64
    labels : ndarray of shape (n_samples,), int64
        The component each point was drawn from.
    """
    n_samples = _check_count(n_samples, "n_samples")
    weights = as_float_array(weights, "weights")
    means = as_float_array(means, "means")
    covariances = as_float_array(covariances, "covariances")
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(
            f"weights must be a 1-D array of shape (n_components,); got shape {weights.shape}."
        )
    if np.any(weights < 0) or not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-8):
        raise ValueError(
            f"weights must be non-negative and sum to 1; got {weights.tolist()} "
            f"(sum {weights.sum():.6g}). Divide them by their sum."
        )
    k = weights.size
    if means.ndim != 2 or means.shape[0] != k:
        raise ValueError(
            f"means must have shape (n_components, n_features) with n_components = {k} "
            f"(the length of weights); got shape {means.shape}."
        )
    d = means.shape[1]
    if covariances.shape != (k, d, d):
        raise ValueError(
            f"covariances must have shape (n_components, n_features, n_features) = "
            f"({k}, {d}, {d}); got shape {covariances.shape}."
        )
    if not np.allclose(covariances, np.swapaxes(covariances, -1, -2)):
        raise ValueError("covariances must be symmetric; got a matrix that is not.")
    smallest = np.linalg.eigvalsh(covariances).min(axis=-1)
    if np.any(smallest <= 0):
        bad = int(np.argmax(smallest <= 0))
        raise ValueError(
            f"covariances must be positive definite; covariances[{bad}] has smallest "
            f"eigenvalue {smallest[bad]:.3g}."
        )

    rng = np.random.default_rng(seed)
    labels = rng.choice(k, size=n_samples, p=weights)
    # Cholesky factors turn standard normal draws into each component's shape; drawing
    # all of z at once keeps the stream (and so the data) independent of the labels.
    z = rng.standard_normal((n_samples, d))
    factors = np.linalg.cholesky(covariances)
    x = means[labels] + np.einsum("nde,ne->nd", factors[labels], z)
    return x, labels.astype(np.int64)


def two_gaussians(seed=0, n_samples=300, weights=(0.5, 0.5), separation=4.0):
    """Two 2-D Gaussian clusters of different shapes: the classic EM walkthrough.

    The first cluster is round and wide, centred at the origin; the second is narrow and
    tilted, centred at ``(separation, separation / 2)``. With the default separation the
    clusters touch but are clearly two.

    Parameters
    ----------
    seed : int, default 0
    n_samples : int, default 300
    weights : (float, float), default (0.5, 0.5)
        Probability of each cluster.
    separation : float, default 4.0
        Distance along the first axis between the two centres, in units of the first
        cluster's standard deviation.

    Returns
    -------
    x : ndarray of shape (n_samples, 2), float64
    labels : ndarray of shape (n_samples,), int64
    """
    separation = float(separation)
    if not np.isfinite(separation):
        raise ValueError(f"separation must be a finite number; got {separation}.")
    means = np.array([[0.0, 0.0], [separation, separation / 2]])
    covariances = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.6, -0.35], [-0.35, 0.4]]])
    return synthetic_mixture(seed, n_samples, weights, means, covariances)


def old_faithful() -> pd.DataFrame:
    """The Old Faithful geyser data: 272 eruptions.

    Returns
    -------
    DataFrame of shape (272, 2)
        ``eruptions`` (duration, minutes) and ``waiting`` (time to the next eruption,
        minutes). Härdle (1991); R's ``datasets::faithful``.
    """
    return _read_builtin("old_faithful.csv")


def galaxy_velocities(thousands: bool = False) -> pd.DataFrame:
    """Velocities of 82 galaxies in the Corona Borealis region (Roeder, 1990).

    Parameters
    ----------
    thousands : bool, default False
        ``False`` gives the file's values in km/s (column ``velocity_km_s``); ``True``
        divides them by 1000 (column ``velocity_1000_km_s``), the units of the mixture
        literature (Richardson & Green, 1997).

    Returns
    -------
    DataFrame of shape (82, 1)
    """
    frame = _read_builtin("galaxy_velocities.csv")
    if thousands:
        return pd.DataFrame({"velocity_1000_km_s": frame["velocity_km_s"] / 1000.0})
    return frame


def load_builtin(name: str) -> pd.DataFrame:
    """One of the shipped data sets by name: ``"old_faithful"`` or ``"galaxy_velocities"``."""
    if name == "old_faithful":
        return old_faithful()
    if name == "galaxy_velocities":
        return galaxy_velocities()
    raise ValueError(
        f"name must be one of {', '.join(map(repr, BUILTIN))}; got {name!r}. "
        "For your own data use load_csv(path)."
    )


def load_csv(path, columns=None) -> pd.DataFrame:
    """Read numeric columns of a CSV file with a header row.

    Parameters
    ----------
    path : str or path-like
    columns : sequence of str, optional
        The columns to keep, in this order; by default every column.

    Returns
    -------
    DataFrame of shape (n_samples, n_features), float64

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If a requested column is absent, a column is not numeric, a value is missing or
        infinite, or no row is left.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"CSV file not found: {str(path)!r} (absolute: {str(path.resolve())!r}). "
            "Check the path; in a config file it is relative to the config file."
        )
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"could not read {str(path)!r} as CSV: {err}") from None
    return select_columns(frame, columns, str(path))


def _read_builtin(filename: str) -> pd.DataFrame:
    # Through the regular package: bayes_gmm/data has no __init__.py to import it by.
    with resources.files("bayes_gmm").joinpath("data", filename).open("r") as handle:
        frame = pd.read_csv(handle)
    return frame.astype(np.float64)


def select_columns(frame: pd.DataFrame, columns=None, source: str = "the data") -> pd.DataFrame:
    """Keep ``columns`` (all by default) and check that every value is a finite number.

    Parameters
    ----------
    frame : DataFrame
    columns : sequence of str, optional
    source : str, default "the data"
        Named in error messages (a file name, a data set's name).

    Returns
    -------
    DataFrame of shape (n_samples, len(columns)), float64
    """
    if columns is not None:
        if isinstance(columns, str):
            columns = [columns]
        columns = list(columns)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(
                f"columns {missing} not found in {source}; its columns are "
                f"{list(frame.columns)}. Use one of those names."
            )
        frame = frame[columns]
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise ValueError(
            f"{source} has no data: {frame.shape[0]} rows and {frame.shape[1]} columns."
        )
    for name in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(
            frame[name]
        ):
            example = frame[name][pd.to_numeric(frame[name], errors="coerce").isna()]
            shown = f" (e.g. {example.iloc[0]!r})" if len(example) else ""
            raise ValueError(
                f"column {name!r} of {source} is not numeric{shown}. Remove it with "
                f"columns=[...] or fix the values."
            )
        values = frame[name].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)):
            row = int(np.argmax(~np.isfinite(values)))
            raise ValueError(
                f"column {name!r} of {source} has a missing or infinite value "
                f"(data row {row + 1}). Fill or drop such rows before fitting."
            )
    return frame.astype(np.float64)


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
    return int(value)
