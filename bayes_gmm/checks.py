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
    try:
        array = np.asarray(x)
    except ValueError as err:  # ragged nested lists
        raise ValueError(
            f"{name} must be a rectangular 2-D array (n_samples, n_features), the same "
            f"number of features in every row; converting it to an array failed: {err}"
        ) from None
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


# The fit is done in the data's own units when their spread lies within
# [2**-STANDARDISE_LOG2, 2**STANDARDISE_LOG2]; beyond, the estimator divides the data by a
# power of two near their spread (exact in binary floating point) and maps the estimate
# back. Well inside float32's range this changes nothing for ordinary data.
STANDARDISE_LOG2 = 16
# Headroom (log2) kept between the data's squared spread and the limits of the dtype the
# results are returned in: covariances, squared distances and scatter sums are ~spread**2.
HEADROOM_LOG2 = 20


def data_scale(x, dtype, name: str = "X") -> float:
    """A power of two to divide ``x`` by before fitting (1.0 for ordinary data).

    The spread is the root mean variance of the features (the largest absolute value
    when every point is the same). Data whose spread lies outside
    ``[2**-16, 2**16]`` are fitted after division by the power of two nearest to it, so the
    EM core always sees numbers of order one (full covariances of data at 1e15 overflow
    float32 and at 1e100 float64 otherwise).

    Raises
    ------
    ValueError
        The data, or covariances of their size (spread squared), cannot be represented in
        ``dtype``, the dtype the results are returned in: no rescaling inside can help,
        since the estimate itself would overflow or underflow.
    """
    x = np.asarray(x, np.float64)
    largest = float(np.max(np.abs(x))) if x.size else 0.0
    if largest == 0.0:
        return 1.0
    spread = largest * float(np.sqrt(np.mean(np.var(x / largest, axis=0))))
    if spread == 0.0:  # every point identical: only the magnitude is known
        spread = largest
    info = np.finfo(dtype)
    log2_spread, log2_largest = np.log2(spread), np.log2(largest)
    too_big = max(2 * log2_spread, log2_largest) > np.log2(info.max) - HEADROOM_LOG2
    too_small = 2 * log2_spread < np.log2(info.tiny) + HEADROOM_LOG2
    if too_big or too_small:
        fix = "Rescale X (e.g. X / X.std(axis=0)) and fit again."
        if np.dtype(dtype) != np.float64:
            fix = ("Enable float64 (JAX_ENABLE_X64=1, or jax.config.update('jax_enable_x64', "
                   "True)) and pass float64 data, or rescale X (e.g. X / X.std(axis=0)).")
        raise ValueError(
            f"{name} has spread ~{spread:.3g} (largest |value| {largest:.3g}): its "
            f"covariances (~spread^2) cannot be represented in {np.dtype(dtype).name}, "
            f"whose normal numbers span {info.tiny:.3g} .. {info.max:.3g}, so the estimate "
            f"would {'overflow' if too_big else 'underflow'}. {fix}"
        )
    if abs(log2_spread) <= STANDARDISE_LOG2:
        return 1.0
    return float(2.0 ** np.round(log2_spread))


def seed_from(random_state) -> int:
    """An integer seed from scikit-learn's kinds of ``random_state``."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= random_state < 2**32:
            raise ValueError(f"random_state must be in [0, 2**32); got {random_state}.")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    raise TypeError(
        "random_state must be None, an int, a numpy.random.Generator or a RandomState; "
        f"got {random_state!r}."
    )
