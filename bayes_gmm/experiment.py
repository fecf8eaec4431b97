"""Run one experiment config: load the data, fit, and write a results folder safely.

This is the layer between :mod:`bayes_gmm.config` (what to do) and :mod:`bayes_gmm.cli`
(how a person asks for it): it calls only the layers below (datasets, the estimator,
plots) and never prints. :func:`run_experiment` returns an :class:`ExperimentResult` the
CLI summarises.

The results folder ``<output_dir>/<name>/`` holds ``map.json`` (the estimate, the prior,
the seed, the config and the software and device it ran on), the EM iteration figures
and the log-posterior trace. It is never half-written and never silently replaced:

- an existing folder is kept unless ``overwrite=True``;
- every file is written under a temporary name and renamed (:func:`os.replace`), and the
  whole folder is first assembled in a hidden temporary sibling
  (``.<name>.<random>.partial``) that is renamed into place only when complete, so an
  interrupted run leaves nothing that looks like a finished result;
- ``map.json`` never holds NaN or infinity: the run fails instead, before anything is
  moved into place.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import jax
import numpy as np
from matplotlib.figure import Figure
from scipy.optimize import linear_sum_assignment

import bayes_gmm
from bayes_gmm import datasets, plots
from bayes_gmm.config import (
    BuiltinData,
    ConfigError,
    CsvData,
    ExperimentConfig,
    MixtureData,
    TwoGaussiansData,
)
from bayes_gmm.estimator import BayesianGMM

# The iteration figures shown together in one grid, at most (evenly spaced, first and
# last included): more panels than this are too small to read.
GRID_PANELS = 20


@dataclass(frozen=True)
class Dataset:
    """Data as the experiment fits them."""

    x: np.ndarray  # (N, D) float64
    columns: tuple[str, ...]  # (D,) feature names
    labels: np.ndarray | None  # (N,) true components of synthetic data, else None
    description: str  # for people: "synthetic two_gaussians (seed 14)"


@dataclass(frozen=True)
class ExperimentResult:
    """What a run produced."""

    config: ExperimentConfig
    data: Dataset
    estimator: BayesianGMM  # fitted, with params_history_
    path: Path  # the results folder
    files: tuple[str, ...]  # written files, relative to path
    record: dict  # the contents of map.json
    warnings: tuple[str, ...]  # messages of warnings raised by the fit


def load_data(config: ExperimentConfig) -> Dataset:
    """The data a config asks for.

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        From :mod:`bayes_gmm.datasets`, prefixed with ``data:``.
    """
    spec = config.data
    try:
        if isinstance(spec, TwoGaussiansData | MixtureData):
            seed = config.seed if spec.seed is None else spec.seed
            if isinstance(spec, TwoGaussiansData):
                x, labels = datasets.two_gaussians(
                    seed, spec.n_samples, spec.weights, spec.separation
                )
            else:
                x, labels = datasets.synthetic_mixture(
                    seed, spec.n_samples, spec.weights, spec.means, spec.covariances
                )
            columns = tuple(f"x{j}" for j in range(x.shape[1]))
            return Dataset(x, columns, labels, f"synthetic {spec.generator} (seed {seed})")
        if isinstance(spec, BuiltinData):
            frame = datasets.select_columns(datasets.load_builtin(spec.name), spec.columns,
                                            spec.name)
            description = f"built-in {spec.name}"
        elif isinstance(spec, CsvData):
            frame = datasets.load_csv(spec.path, spec.columns)
            description = f"CSV {spec.path}"
        else:  # a bug: a new kind of [data] in config.py needs a branch here
            raise NotImplementedError(f"no loader for {type(spec).__name__}")
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise type(err)(f"data: {err}") from None
    return Dataset(frame.to_numpy(np.float64), tuple(map(str, frame.columns)), None,
                   description)


def fit(config: ExperimentConfig, data: Dataset) -> tuple[BayesianGMM, tuple[str, ...]]:
    """Fit the estimator the config describes, keeping the EM history.

    Returns
    -------
    estimator : BayesianGMM
    warnings : tuple of str
        Messages of the warnings the fit raised (e.g. no convergence in ``max_iter``).
    """
    gmm = BayesianGMM(
        **config.model.estimator_kwargs(),
        **_prior_kwargs(config),
        random_state=config.seed,
        keep_history=True,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gmm.fit(data.x)
    return gmm, tuple(str(w.message) for w in caught)


def run_experiment(
    config: ExperimentConfig,
    *,
    config_path=None,
    output_dir=None,
    overwrite: bool = False,
) -> ExperimentResult:
    """Load, fit, and write ``<output_dir>/<config.name>/``.

    Parameters
    ----------
    config : ExperimentConfig
    config_path : str or path-like, optional
        The file ``config`` was read from; copied into the results as ``config.toml``.
    output_dir : str or path-like, optional
        Overrides ``config.output_dir``.
    overwrite : bool, default False
        Replace an existing results folder.

    Returns
    -------
    ExperimentResult

    Raises
    ------
    FileExistsError
        The results folder exists and ``overwrite`` is False (checked before fitting).
    ConfigError
        ``output.features`` names a column the data do not have (checked before fitting).
    FileNotFoundError, ValueError, TypeError
        Data that cannot be loaded (see :func:`load_data`) or fitted (from the
        estimator), or a non-finite value that would go into ``map.json``.
    FloatingPointError
        From the estimator, when the fit itself became non-finite.
    """
    root = Path(config.output_dir if output_dir is None else output_dir)
    final = root / config.name
    _check_target(final, overwrite)

    data = load_data(config)
    _check_features(config, data)
    gmm, messages = fit(config, data)
    iterations = _figure_iterations(gmm.n_iter_, config.output.max_iteration_figures)
    names = _file_names(config, iterations, config_path is not None)
    record = _record(config, config_path, data, gmm, messages, names)
    _check_finite(record)
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{config.name}.", suffix=".partial", dir=root))
    try:
        _write_figures(staging, config, data, gmm, iterations, names)
        if config_path is not None:
            _atomic_write(staging / "config.toml", Path(config_path).read_bytes())
        # map.json last: inside the staging folder too, its presence means "complete".
        _atomic_write(staging / "map.json", text.encode("utf-8"))
        _move_into_place(staging, final, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = tuple(sorted(str(p.relative_to(final)) for p in final.rglob("*") if p.is_file()))
    return ExperimentResult(config, data, gmm, final, files, record, messages)


# --------------------------------------------------------------------------------------
# The record (map.json)


def _record(config, config_path, data, gmm, messages, names) -> dict:
    k = gmm.weights_.shape[0]
    record = {
        "name": config.name,
        "bayes_gmm_version": bayes_gmm.__version__,
        "seed": config.seed,
        "data": {
            "description": data.description,
            "n_samples": int(data.x.shape[0]),
            "n_features": int(data.x.shape[1]),
            "columns": list(data.columns),
        },
        "n_components": int(k),
        "covariance_type": config.model.covariance_type,
        "weights": gmm.weights_.tolist(),
        "means": gmm.means_.tolist(),
        "covariances": gmm.covariances_.tolist(),
        "log_posterior": float(gmm.lower_bound_),
        "log_likelihood": float(gmm.log_likelihood_),
        "iterations": int(gmm.n_iter_),
        "converged": bool(gmm.converged_),
        "log_posterior_history": np.asarray(gmm.log_posterior_history_).tolist(),
        "dead_components": np.asarray(gmm.dead_components_).tolist(),
        "prior": {f"{field}_prior": np.asarray(value).tolist()
                  for field, value in gmm.prior_._asdict().items()},
        "warnings": list(messages),
        "files": names["all"],
        "config": config.to_dict(),
        "config_file": None if config_path is None else str(Path(config_path).resolve()),
        "environment": _environment(gmm),
    }
    if data.labels is not None:
        record["data"]["agreement_with_true_labels"] = _agreement(
            data.labels, gmm.predict(data.x), k
        )
    return record


def _agreement(truth, predicted, n_components) -> float:
    """Fraction of points whose component matches the truth, after matching labels.

    Component labels are arbitrary (EM may well call the first true cluster "component
    2"), so predicted labels are first matched to true ones by the assignment that
    maximises agreement.
    """
    n_true = int(max(truth.max() + 1, n_components))
    confusion = np.zeros((n_true, n_true))
    np.add.at(confusion, (truth, predicted), 1)
    rows, cols = linear_sum_assignment(-confusion)
    return float(confusion[rows, cols].sum() / len(truth))


def _environment(gmm) -> dict:
    device = jax.devices()[0]
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "bayes_gmm": bayes_gmm.__version__,
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "numpy": np.__version__,
        "device": str(device),
        "device_kind": device.device_kind,
        "device_platform": device.platform,
        "device_count": jax.device_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "dtype": str(gmm.means_.dtype),
    }


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _check_finite(value, path: str = "map.json") -> None:
    """Raise if any number in ``value`` is NaN or infinite, naming where."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, f"{path}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(
            f"the fit gave a non-finite value ({value}) at {path}; no results were "
            "written. Enable float64 (JAX_ENABLE_X64=1) or strengthen the prior "
            "(a larger [prior] covariance_prior or mean_precision_prior)."
        )


# --------------------------------------------------------------------------------------
# Figures


def _figure_iterations(n_iter: int, most: int) -> list[int]:
    """Every iteration 0..n_iter, or ``most`` evenly spaced ones (first and last kept)."""
    if n_iter + 1 <= most:
        return list(range(n_iter + 1))
    return sorted({int(round(t)) for t in np.linspace(0, n_iter, most)})


def _file_names(config, iterations, with_config: bool) -> dict:
    ext = config.output.format
    width = max(3, len(str(iterations[-1])))
    names = {"iterations": [], "grid": None, "log_posterior": None}
    if config.output.iteration_figures:
        names["iterations"] = [f"iterations/iteration_{t:0{width}d}.{ext}" for t in iterations]
        names["grid"] = f"iterations_grid.{ext}"
    if config.output.log_posterior_figure:
        names["log_posterior"] = f"log_posterior.{ext}"
    names["all"] = (
        ["map.json"]
        + (["config.toml"] if with_config else [])
        + ([names["log_posterior"]] if names["log_posterior"] else [])
        + ([names["grid"]] if names["grid"] else [])
        + names["iterations"]
    )
    return names


def _write_figures(folder: Path, config, data, gmm, iterations, names) -> None:
    out = config.output
    history = np.asarray(gmm.log_posterior_history_)
    features = out.features if data.x.shape[1] >= 2 else (0, 1)
    if out.iteration_figures:
        (folder / "iterations").mkdir()
        steps = gmm.params_history_
        for t, name in zip(iterations, names["iterations"], strict=True):
            fig = Figure(figsize=(6.0, 5.0), layout="constrained")
            params = type(steps)(*(a[t] for a in steps))
            plots.em_iteration(
                data.x, params, config.model.covariance_type, ax=fig.add_subplot(),
                iteration=t, log_posterior=float(history[t]), features=features,
                feature_names=data.columns,
            )
            _save(fig, folder / name, out)
        panels = [iterations[int(round(i))] for i in
                  np.linspace(0, len(iterations) - 1, min(GRID_PANELS, len(iterations)))]
        ncols = min(5, len(panels))
        nrows = -(-len(panels) // ncols)
        fig = Figure(figsize=(3.4 * ncols, 3.2 * nrows), layout="constrained")
        plots.em_iterations_grid(
            data.x, gmm.params_history_, config.model.covariance_type, iterations=panels,
            log_posteriors=history, features=features, ncols=ncols, fig=fig,
            feature_names=data.columns,
        )
        _save(fig, folder / names["grid"], out)
    if out.log_posterior_figure:
        fig = Figure(figsize=(6.0, 4.0), layout="constrained")
        plots.log_posterior_trace(history, ax=fig.add_subplot(), converged=gmm.converged_)
        _save(fig, folder / names["log_posterior"], out)


def _save(fig: Figure, path: Path, out) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fig.savefig(temporary, format=out.format, dpi=out.dpi)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# Files and folders


def _check_features(config, data) -> None:
    """The plotted columns exist (checked before the fit, not after it)."""
    d = data.x.shape[1]
    features = config.output.features
    if d >= 2 and max(features) >= d:
        raise ConfigError(
            f"output.features: expected column indices below n_features = {d}; got "
            f"{list(features)} (the data have columns {list(data.columns)}). Pick two of "
            f"0 .. {d - 1}.",
            key="output.features",
        )


def _prior_kwargs(config) -> dict:
    kwargs = config.prior.estimator_kwargs()
    return {k: np.asarray(v, dtype=np.float64) if isinstance(v, tuple) else v
            for k, v in kwargs.items()}


def _check_target(final: Path, overwrite: bool) -> None:
    if final.exists() and not final.is_dir():
        raise FileExistsError(
            f"{str(final)!r} exists and is not a folder; move it away, or change name in "
            "the config or --output-dir."
        )
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"results folder {str(final)!r} already exists; pass --overwrite to replace "
            "it, or change name in the config or --output-dir."
        )


def _atomic_write(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` via a temporary file in the same folder."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _move_into_place(staging: Path, final: Path, overwrite: bool) -> None:
    """Rename the complete staging folder to ``final``, replacing an old one if allowed.

    A folder cannot be renamed over a non-empty one, so an old result is first renamed
    aside (hidden), and restored if the second rename fails.
    """
    _check_target(final, overwrite)  # again: another run may have finished meanwhile
    if not final.exists():
        os.replace(staging, final)
        return
    old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
    os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
