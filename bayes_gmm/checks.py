"""Checks of user data at the boundary: one place that turns whatever a user passes
(lists, NumPy arrays, pandas DataFrames) into a finite 2-D float array, or says exactly
what is wrong and how to fix it. The pure core trusts what comes out of here."""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from bayes_gmm.exceptions import NotFittedError


def check_data(x, name: str = "X", *, min_samples: int = 1) -> np.ndarray:
    """Return ``x`` as a finite 2-D float array of shape (n_samples, n_features).

    float32 and float64 keep their dtype (the dtype of the results follows the data);
    integers and booleans become float64.

    Raises
    ------
    TypeError
        Sparse, complex, string or otherwise non-numeric data.
    ValueError
        Not 2-D, empty, fewer than ``min_samples`` rows, NaN or infinite values.
    """
    if hasattr(x, "toarray") or type(x).__module__.startswith("scipy.sparse"):
        raise TypeError(
            f"{name} is a sparse matrix, which bayes_gmm does not support: a Gaussian "
            f"mixture needs dense data. Pass {name}.toarray()."
        )
    if hasattr(x, "to_numpy"):  # pandas: avoid object arrays from mixed frames
        x = x.to_numpy()
    array = np.asarray(x)
    if array.dtype.kind == "c":
        raise ValueError(
            f"Complex data not supported: {name} has dtype {array.dtype}. Pass the real "
            f"part ({name}.real) or split real and imaginary parts into features."
        )
    if array.dtype.kind in "USV":
        raise TypeError(
            f"{name} must be numeric; got an array of dtype {array.dtype} (text). Convert "
            "the columns to numbers first, e.g. with pandas.to_numeric."
        )
    if array.dtype.kind not in "fiub":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"{name} must be numeric; converting it to float failed: {err}. Remove or "
                "encode the non-numeric values."
            ) from None
    elif array.dtype.kind != "f" or array.dtype.itemsize < 4:
        array = array.astype(np.float64)
    if array.ndim == 1:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features); got a 1-D array of shape "
            f"{array.shape}. Reshape your data either using array.reshape(-1, 1) if it has "
            "a single feature or array.reshape(1, -1) if it contains a single sample."
        )
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features); got {array.ndim} dimensions, "
            f"shape {array.shape}."
        )
    n_samples, n_features = array.shape
    if n_features == 0:
        raise ValueError(
            f"{name} has 0 feature(s) (shape={array.shape}) while a minimum of 1 is required."
        )
    if n_samples < min_samples:
        raise ValueError(
            f"{name} has {n_samples} sample(s) (shape={array.shape}) while a minimum of "
            f"{min_samples} is required."
        )
    if not np.all(np.isfinite(array)):
        bad = ~np.isfinite(array)
        row, col = np.argwhere(bad)[0]
        kind = "NaN" if np.isnan(array[row, col]) else "infinity (inf)"
        raise ValueError(
            f"{name} contains NaN or inf in {int(bad.sum())} entries; the first is {kind} at "
            f"row {row}, column {col}. Remove or impute those values before fitting."
        )
    return np.ascontiguousarray(array)


def as_float_array(value, name: str, *, finite: bool = True) -> np.ndarray:
    """``value`` as a float64 array, or a TypeError naming ``name``; with ``finite``, a
    ValueError if it holds NaN or inf."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numeric; got {value!r} ({err}).") from None
    if finite and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite; got {value!r}.")
    return array


def feature_names(x) -> np.ndarray | None:
    """Column names of a DataFrame as an object array when all are strings, else None."""
    columns = getattr(x, "columns", None)
    if columns is None:
        return None
    names = np.asarray(columns, dtype=object)
    if len(names) == 0 or not all(isinstance(n, str) for n in names):
        return None
    return names


def check_feature_names(estimator, x) -> None:
    """Compare the columns of ``x`` with those seen in fit (scikit-learn's rules)."""
    fitted = getattr(estimator, "feature_names_in_", None)
    given = feature_names(x)
    cls = type(estimator).__name__
    if fitted is None and given is None:
        return
    if fitted is None:
        warnings.warn(f"X has feature names, but {cls} was fitted without feature names",
                      UserWarning, stacklevel=3)
        return
    if given is None:
        warnings.warn(
            f"X does not have valid feature names, but {cls} was fitted with feature names",
            UserWarning, stacklevel=3,
        )
        return
    if len(fitted) == len(given) and np.all(fitted == given):
        return
    message = "The feature names should match those that were passed during fit.\n"
    unexpected = sorted(set(given) - set(fitted))
    missing = sorted(set(fitted) - set(given))
    if unexpected:
        message += "Feature names unseen at fit time:\n" + _listing(unexpected)
    if missing:
        message += "Feature names seen at fit time, yet now missing:\n" + _listing(missing)
    if not unexpected and not missing:
        message += "Feature names must be in the same order as they were in fit.\n"
    raise ValueError(message)


def _listing(names, limit=5):
    shown = [f"- {n}\n" for n in names[:limit]]
    return "".join(shown) + ("- ...\n" if len(names) > limit else "")


def check_is_fitted(estimator, attribute: str = "weights_") -> None:
    if not hasattr(estimator, attribute):
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
            "appropriate arguments before using this estimator."
        )


def check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}.")
    return int(value)


def check_float(value, name: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number >= {minimum}; got {value!r}.")
    if not (np.isfinite(value) and value >= minimum):
        raise ValueError(f"{name} must be a finite number >= {minimum}; got {value}.")
    return float(value)


def check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}."
        )
    return value
