"""Run one experiment config: load the data, fit, and write a results folder safely.

This is the layer between :mod:`bayes_gmm.config` (what to do) and :mod:`bayes_gmm.cli`
(how a person asks for it): it calls only the layers below (datasets, the estimator,
plots) and prints nothing but, with ``progress=True``, a line on stderr for each long
step (:func:`bayes_gmm.progress.step`). :func:`run_experiment` returns an
:class:`ExperimentResult` the CLI summarises.

The results folder ``<output_dir>/<name>/`` holds ``map.json`` (the estimate, the prior,
the seed, the config and the software and device it ran on), ``run.json`` (when it ran
and how long sampling took: kept apart so that ``map.json`` and the posterior files are
bit-identical for the same config, seed, versions and device), the EM iteration figures
and the log-posterior trace. With a ``[posterior]`` section the posterior is sampled
from the MAP after the fit (:meth:`bayes_gmm.BayesianGMM.sample_posterior`) and the
folder also holds ``posterior.nc`` (the draws as an ArviZ 1.x DataTree),
``comparison.csv`` (MAP against posterior, :func:`bayes_gmm.compare_map_posterior`),
``diagnostics.csv`` (R-hat, ESS, divergences, time), ``posterior.json`` (the settings
and headline diagnostics) and the figures of :mod:`bayes_gmm.plots` (MAP and posterior
ellipses, a forest plot, trace plots); each method of ``compare_methods`` writes the
same files with its name as a suffix. With a ``[sensitivity]`` section the MAP is also
refitted over a grid of hyperparameters (:func:`bayes_gmm.sensitivity.prior_sweep`, every
fit started at the MAP by default): ``sweep.nc`` (the Dataset), ``sweep.csv`` (one row per
grid point and component), ``sweep.png``, ``effective_components.png`` (when the weights'
concentration is swept), ``sensitivity.json`` (settings and headline) and, with a posterior,
``power_scaling.csv`` (:func:`bayes_gmm.sensitivity.power_scaling_sensitivity` of the main
method's draws). With a ``[selection]`` section every criterion for choosing K is
computed (:func:`bayes_gmm.selection.select_k`, over one covariance type or several):
``selection.csv`` (one row per K, or per covariance type and K), ``selection.png``,
``selection.json`` (settings, the best model and the runner-up per criterion) and, with
``[selection.occupied]``, ``occupied_components.csv`` and ``occupied_components.png``
(:func:`bayes_gmm.selection.occupied_components`). Everything is computed before the
first file is written. The folder is never half-written and never silently replaced:

- an existing folder is kept unless ``overwrite=True``;
- every file is written under a temporary name and renamed (:func:`os.replace`), and the
  whole folder is first assembled in a hidden temporary sibling
  (``.<name>.<random>.partial``) that is renamed into place only when complete, so an
  interrupted run leaves nothing that looks like a finished result;
- ``map.json`` and ``posterior.json`` never hold NaN or infinity: the run fails instead,
  before anything is moved into place; a statistic that is undefined (R-hat of a single
  chain, divergences of a sampler without them) is ``null`` there and an empty field in
  the CSV tables.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
import tempfile
import uuid
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.optimize import linear_sum_assignment

import bayes_gmm
from bayes_gmm import datasets, diagnostics, plots
from bayes_gmm.config import (
    BuiltinData,
    ConfigError,
    CsvData,
    ExperimentConfig,
    MixtureData,
    TwoGaussiansData,
)
from bayes_gmm.estimator import BayesianGMM
from bayes_gmm.progress import reporting, step

# The iteration figures shown together in one grid, at most (evenly spaced, first and
# last included): more panels than this are too small to read.
GRID_PANELS = 20

# Thresholds of the notes on a posterior run (Vehtari et al. 2021: R-hat below 1.01, bulk
# and tail ESS of at least 100 per chain before the estimates are trusted).
R_HAT_LIMIT = 1.01
ESS_PER_CHAIN = 100
# Posterior draws whose ellipses are drawn in the MAP-vs-posterior figure.
FIGURE_DRAWS = 50
# Trace figures: variables per figure (covariances apart, as they are the most numerous).
TRACE_FIGURES = {"trace": ("lp", "weights", "means"), "trace_covariances": ("covariances",)}


@dataclass(frozen=True)
class Dataset:
    """Data as the experiment fits them."""

    x: np.ndarray  # (N, D) float64
    columns: tuple[str, ...]  # (D,) feature names
    labels: np.ndarray | None  # (N,) true components of synthetic data, else None
    description: str  # for people: "synthetic two_gaussians (seed 14)"
    rows: np.ndarray | None = None  # (N,) rows of the source kept by data.subsample, else None

    @property
    def frame(self) -> pd.DataFrame:
        """The data with their column names (the estimator keeps them as feature names)."""
        return pd.DataFrame(self.x, columns=list(self.columns))


@dataclass(frozen=True)
class PosteriorResult:
    """One method's posterior and its tables."""

    method: str
    tree: object  # xarray.DataTree, ArviZ 1.x layout, aligned to the MAP
    comparison: pd.DataFrame  # bayes_gmm.compare_map_posterior
    diagnostics: pd.DataFrame  # diagnostics_table + n_divergences, sampling_time_s
    summary: dict  # the headline, as in posterior.json (JSON-ready, no NaN)


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
    posterior: dict = field(default_factory=dict)  # method -> PosteriorResult, main first
    posterior_record: dict | None = None  # the contents of posterior.json
    sensitivity: SensitivityResult | None = None  # with [sensitivity]: the prior sweep
    selection: SelectionResult | None = None  # with [selection]: choosing K


def load_data(config: ExperimentConfig) -> Dataset:
    """The data a config asks for.

    With ``[data] subsample = n`` (built-in and CSV data), ``n`` rows chosen by
    :func:`subsample_rows` from the data's ``seed`` (by default the experiment's); their
    positions in the full data are ``Dataset.rows`` and ``map.json``'s
    ``data.subsample_rows``.

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
            raw = (datasets.galaxy_velocities(thousands=True) if spec.thousands
                   else datasets.load_builtin(spec.name))
            frame = datasets.select_columns(raw, spec.columns, spec.name)
            description = f"built-in {spec.name}" + (" (1000 km/s)" if spec.thousands else "")
        elif isinstance(spec, CsvData):
            frame = datasets.load_csv(spec.path, spec.columns)
            description = f"CSV {spec.path}"
        else:  # a bug: a new kind of [data] in config.py needs a branch here
            raise NotImplementedError(f"no loader for {type(spec).__name__}")
        rows = None
        if spec.subsample is not None:
            seed = config.seed if spec.seed is None else spec.seed
            rows = subsample_rows(len(frame), spec.subsample, seed)
            description += f", {spec.subsample} of {len(frame)} rows (seed {seed})"
            frame = frame.iloc[rows]
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise type(err)(f"data: {err}") from None
    return Dataset(frame.to_numpy(np.float64), tuple(map(str, frame.columns)), None,
                   description, rows)


def subsample_rows(n_rows: int, n_kept: int, seed: int) -> np.ndarray:
    """Which rows ``[data] subsample`` keeps: ``n_kept`` of ``n_rows`` without replacement.

    Parameters
    ----------
    n_rows : int
        Rows of the data.
    n_kept : int
        Rows to keep, at most ``n_rows``.
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed keeps the same rows.

    Returns
    -------
    ndarray of int64, shape (n_kept,)
        Row positions in increasing order (the kept rows stay in the data's order).
    """
    if n_kept > n_rows:
        raise ValueError(
            f"subsample = {n_kept} is more rows than the data have ({n_rows}); ask for "
            f"at most {n_rows}, or leave subsample out to use every row."
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=n_kept, replace=False)).astype(np.int64)


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
        gmm.fit(data.frame)
    return gmm, tuple(str(w.message) for w in caught)


def sample(config: ExperimentConfig, data: Dataset, gmm: BayesianGMM,
           progress: bool = False) -> dict:
    """Sample the posterior with every method of ``config.posterior`` and tabulate it.

    Parameters
    ----------
    config : ExperimentConfig
        With a ``posterior`` section.
    data : Dataset
        The data ``gmm`` was fitted on.
    gmm : BayesianGMM
        The fitted MAP estimate: where the samplers start, and the pivot of the labels.
    progress : bool, default False
        Show a progress bar (NUTS; the Gibbs sampler and Laplace have none).

    Returns
    -------
    dict of str to PosteriorResult
        The main method first, then ``compare_methods`` in order.
    """
    spec = config.posterior
    results = {}
    for method in spec.methods:
        bar = progress and method == "nuts"
        with step(_sampling_words(method, spec), shares_stream=bar), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tree = gmm.sample_posterior(data.frame, method=method, progress_bar=bar,
                                        **spec.sampler_kwargs())
            comparison = diagnostics.compare_map_posterior(gmm, tree, hdi_prob=spec.hdi_prob)
            table = diagnostics.diagnostics_table(tree)
        messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        table = _with_run_columns(table)
        summary = _posterior_summary(method, tree, comparison, table, spec, messages)
        results[method] = PosteriorResult(method, tree, comparison, table, summary)
    return results


def _sampling_words(method, spec) -> str:
    """What the progress line says while ``method`` samples."""
    size = f"{spec.num_chains} chains x {spec.num_samples} draws"
    if method == "laplace":
        return f"drawing from the Laplace approximation at the MAP ({size})"
    name = {"nuts": "NUTS", "gibbs": "the Gibbs sampler"}.get(method, method)
    return f"sampling the posterior with {name} ({size} after {spec.num_warmup} warm-up)"


def run_experiment(
    config: ExperimentConfig,
    *,
    config_path=None,
    output_dir=None,
    overwrite: bool = False,
    progress: bool = False,
) -> ExperimentResult:
    """Load, fit, sample the posterior if the config asks, and write
    ``<output_dir>/<config.name>/``.

    Parameters
    ----------
    config : ExperimentConfig
    config_path : str or path-like, optional
        The file ``config`` was read from; copied into the results as ``config.toml``.
    output_dir : str or path-like, optional
        Overrides ``config.output_dir``.
    overwrite : bool, default False
        Replace an existing results folder.
    progress : bool, default False
        Say on stderr what is running (fitting, each sampler, the sweep, choosing K,
        writing the figures) and how long it took (:func:`bayes_gmm.progress.step`), and
        show a progress bar while NUTS samples.

    Returns
    -------
    ExperimentResult

    Raises
    ------
    FileExistsError
        The results folder exists and ``overwrite`` is False (checked before fitting).
    ConfigError
        ``output.features`` names a column the data do not have, or a value of
        ``sensitivity.grid`` the data do not admit (both checked before fitting).
    FileNotFoundError, ValueError, TypeError
        Data that cannot be loaded (see :func:`load_data`) or fitted (from the
        estimator), or a non-finite value that would go into ``map.json``.
    FloatingPointError
        From the estimator, when the fit itself became non-finite, or from the Laplace
        approximation when the curvature at the MAP is not positive definite.
    """
    with reporting(progress):
        return _run_experiment(config, config_path, output_dir, overwrite, progress)


def _run_experiment(config, config_path, output_dir, overwrite, progress) -> ExperimentResult:
    root = Path(config.output_dir if output_dir is None else output_dir)
    final = root / config.name
    _check_target(final, overwrite)

    data = load_data(config)
    _check_features(config, data)
    grid = None if config.sensitivity is None else sensitivity_grid(config, data)
    if config.selection is not None:
        check_selection(config, data)
    model = config.model
    starts = f", {model.n_init} starts" if model.n_init > 1 else ""
    with step(f"fitting the MAP (K={model.n_components}, {model.covariance_type}{starts})"):
        gmm, messages = fit(config, data)
    posterior = {} if config.posterior is None else sample(config, data, gmm, progress)
    swept = None if grid is None else run_sensitivity(config, data, gmm, grid, posterior)
    iterations = _figure_iterations(gmm.n_iter_, config.output.max_iteration_figures)
    names = _file_names(config, iterations, config_path is not None)
    if swept is not None:
        names["sensitivity"] = _sensitivity_file_names(config)
        names["all"] += names["sensitivity"]["all"]
        _check_finite(swept.summary, "sensitivity.json")
    chosen = None if config.selection is None else run_selection(config, data)
    if chosen is not None:
        names["selection"] = _selection_file_names(config)
        names["all"] += names["selection"]["all"]
        _check_finite(chosen.summary, "selection.json")
    record = _record(config, config_path, data, gmm, messages, names)
    _check_finite(record)
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    posterior_record = None
    if posterior:
        posterior_record = _posterior_record(config, posterior, names)
        _check_finite(posterior_record, "posterior.json")
        posterior_text = json.dumps(posterior_record, indent=2, allow_nan=False) + "\n"

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{config.name}.", suffix=".partial", dir=root))
    _give_folder_default_permissions(staging)
    try:
        n_figures = len(names["iterations"]) + bool(names["grid"]) + bool(names["log_posterior"])
        with step(f"drawing the EM figures ({n_figures})") if n_figures else nullcontext():
            _write_figures(staging, config, data, gmm, iterations, names)
        if posterior:
            with step("writing the posterior draws, tables and figures"):
                _write_posterior(staging, config, data, gmm, posterior, names)
            _atomic_write(staging / "posterior.json", posterior_text.encode("utf-8"))
        if swept is not None:
            with step("writing the sweep and its figures"):
                _write_sensitivity(staging, config, swept, names["sensitivity"])
        if chosen is not None:
            with step("writing the selection table and figures"):
                _write_selection(staging, config, chosen, names["selection"])
        if config_path is not None:
            _atomic_write(staging / "config.toml", Path(config_path).read_bytes())
        _atomic_write(staging / "run.json", _run_record(
            posterior, None if swept is None else swept.sweep_time_s))
        # map.json last: inside the staging folder too, its presence means "complete".
        _atomic_write(staging / "map.json", text.encode("utf-8"))
        _move_into_place(staging, final, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = tuple(sorted(str(p.relative_to(final)) for p in final.rglob("*") if p.is_file()))
    return ExperimentResult(config, data, gmm, final, files, record, messages, posterior,
                            posterior_record, sensitivity=swept, selection=chosen)


# --------------------------------------------------------------------------------------
# Prior sensitivity ([sensitivity]): the sweep, power scaling, their files

# Per-point scalars of a sweep, repeated on each component's row of sweep.csv.
SWEEP_SCALARS = ("log_posterior", "log_likelihood", "n_effective_components", "converged",
                 "n_iter")


@dataclass(frozen=True)
class SensitivityResult:
    """A prior sweep and, with a posterior, its power-scaling sensitivity."""

    sweep: object  # xarray.Dataset of bayes_gmm.sensitivity.prior_sweep
    table: pd.DataFrame  # sweep.csv: one row per grid point and component
    power_scaling: pd.DataFrame | None  # power_scaling.csv (main posterior method), or None
    summary: dict  # the contents of sensitivity.json (JSON-ready, no NaN)
    sweep_time_s: float  # wall time of the sweep, compilation included (run.json)


def sensitivity_grid(config: ExperimentConfig, data: Dataset) -> dict:
    """The grid of ``[sensitivity]`` as arrays, checked against the data before any fit.

    Returns
    -------
    dict of str to ndarray
        ``{hyperparameter: float64 values}`` as :func:`bayes_gmm.sensitivity.check_grid`
        returns them.

    Raises
    ------
    ConfigError
        A value that is not admissible for these data (e.g. ``degrees_of_freedom_prior``
        <= n_features - 1, a non-positive ``mean_precision_prior``), naming the key
        ``sensitivity.grid.<hyperparameter>``.
    """
    from bayes_gmm.sensitivity import check_grid

    spec = config.sensitivity
    arrays = spec.grid.arrays()
    n_features = data.x.shape[1]
    for name, values in arrays.items():
        try:
            check_grid({name: values}, n_features)
        except ValueError as err:
            key = f"sensitivity.grid.{name}"
            raise ConfigError(f"{key}: {err}", key=key) from None
    return check_grid(arrays, n_features, spec.combine)


def run_sensitivity(config: ExperimentConfig, data: Dataset, gmm: BayesianGMM, grid: dict,
                posterior: dict) -> SensitivityResult:
    """Refit the MAP over the grid of ``config.sensitivity`` and, when there is a
    posterior, tabulate its power-scaling sensitivity.

    Parameters
    ----------
    config : ExperimentConfig
        With a ``sensitivity`` section.
    data : Dataset
    gmm : BayesianGMM
        The fitted MAP: its prior is the base of the grid, and with ``start = "map"`` its
        estimate is where every fit of the grid starts.
    grid : dict
        From :func:`sensitivity_grid`.
    posterior : dict of str to PosteriorResult
        From :func:`sample` (empty without ``[posterior]``); power scaling reads the main
        method's draws.
    """
    import time

    from bayes_gmm.sensitivity import power_scaling_sensitivity, prior_sweep

    spec, model = config.sensitivity, config.model
    start = spec.start
    began = time.perf_counter()
    with step(f"prior sweep ({spec.n_points} MAP fits over {', '.join(grid)})"):
        sweep = prior_sweep(
            data.frame, gmm.prior_, grid, covariance_type=model.covariance_type,
            combine=spec.combine, key=config.seed,
            init_params=gmm.params_ if start == "map" else None,
            init=model.init_params if start == "map" else start,
            max_iter=model.max_iter, tol=model.tol, weight_threshold=spec.weight_threshold,
            chunk_size=model.chunk_size,
        )
    sweep_time = time.perf_counter() - began
    table = sweep_table(sweep)
    power = None
    if posterior and spec.power_scaling:
        method, main = next(iter(posterior.items()))
        with step(f"power-scaling sensitivity of the {method} draws"):
            power = power_scaling_sensitivity(main.tree)
    summary = _sensitivity_summary(config, sweep, grid, power,
                                   next(iter(posterior)) if power is not None else None)
    return SensitivityResult(sweep, table, power, summary, sweep_time)


def sweep_table(sweep) -> pd.DataFrame:
    """A :func:`bayes_gmm.sensitivity.prior_sweep` Dataset as one row per grid point and
    component: the swept hyperparameters, ``component``, ``weight``, ``mean_<feature>``
    and ``variance_<feature>`` (the covariance's diagonal), then the point's scalars
    (:data:`SWEEP_SCALARS`). The whole Dataset is ``sweep.nc``."""
    from bayes_gmm.sensitivity import swept_hyperparameters

    columns = {"weight": sweep["weights"].to_series()}
    for feature in sweep["feature"].values:
        columns[f"mean_{feature}"] = sweep["means"].sel(feature=feature).to_series()
        columns[f"variance_{feature}"] = (
            sweep["covariances"].sel(feature=feature, feature_bis=feature).to_series())
    table = pd.DataFrame(columns)
    points = table.index.droplevel("component")
    for name in SWEEP_SCALARS:
        table[name] = sweep[name].to_series().reindex(points).to_numpy()
    table = table.reset_index()
    if sweep.attrs.get("combine") == "zip":  # the values of each point, after its index
        point = table["point"].to_numpy()
        for position, name in enumerate(swept_hyperparameters(sweep), start=1):
            table.insert(position, name, sweep[name].to_numpy()[point])
    return table


def _sensitivity_summary(config, sweep, grid, power, method) -> dict:
    """The headline of a sweep (and of power scaling), as in sensitivity.json."""
    spec = config.sensitivity
    effective = np.asarray(sweep["n_effective_components"]).ravel()
    counts = np.bincount(effective, minlength=config.model.n_components + 1)
    summary = {
        "name": config.name,
        "bayes_gmm_version": bayes_gmm.__version__,
        "seed": config.seed,
        "settings": _plain_config(spec),
        "grid": {name: np.asarray(values).tolist() for name, values in grid.items()},
        "n_points": int(effective.size),
        "n_effective_components": {
            "min": int(effective.min()), "max": int(effective.max()),
            "points_with": {str(k): int(c) for k, c in enumerate(counts) if c},
        },
        "converged_points": int(np.asarray(sweep["converged"]).sum()),
        "relabelled_fraction": float(sweep.attrs["relabelled_fraction"]),
        "reference_log_posterior": _finite_or_none(sweep["reference_log_posterior"]),
        "power_scaling": None,
    }
    if power is not None:
        from bayes_gmm.sensitivity import PSENSE_THRESHOLD as threshold

        summary["power_scaling"] = {
            "method": method,
            "threshold": threshold,
            "n_parameters": len(power),
            "prior_sensitive": [str(i) for i in power.index[power["prior"] >= threshold]],
            "likelihood_sensitive": [
                str(i) for i in power.index[power["likelihood"] >= threshold]],
            "max_prior": _finite_or_none(power["prior"].max()),
            "max_likelihood": _finite_or_none(power["likelihood"].max()),
        }
    return summary


def _sensitivity_file_names(config) -> dict:
    ext = config.output.format
    spec = config.sensitivity
    names = {"json": "sensitivity.json", "nc": "sweep.nc", "csv": "sweep.csv",
             "sweep_figure": f"sweep.{ext}", "effective_figure": None, "power_scaling": None}
    if spec.grid.weight_concentration_prior is not None:
        names["effective_figure"] = f"effective_components.{ext}"
    if config.posterior is not None and spec.power_scaling:
        names["power_scaling"] = "power_scaling.csv"
    names["all"] = [name for name in names.values() if name is not None]
    return names


def _write_sensitivity(folder: Path, config, result: SensitivityResult, names) -> None:
    """sweep.nc, sweep.csv, the figures, power_scaling.csv and sensitivity.json."""
    out = config.output
    temporary = folder / f".{names['nc']}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        result.sweep.to_netcdf(temporary, engine="h5netcdf")
        os.replace(temporary, folder / names["nc"])
    finally:
        temporary.unlink(missing_ok=True)
    _atomic_write(folder / names["csv"], _csv(result.table, names["csv"], index=False))
    n_quantities = len(plots.SWEEP_DEFAULT_QUANTITIES)
    n_columns = len(result.summary["grid"])
    fig = Figure(figsize=(3.8 * n_columns + 0.6, 2.4 * n_quantities + 0.8),
                 layout="constrained")
    plots.sweep_figure(result.sweep, fig=fig)
    _save(fig, folder / names["sweep_figure"], out)
    if names["effective_figure"]:
        fig = Figure(figsize=(6.0, 4.0), layout="constrained")
        plots.effective_components_figure(result.sweep, ax=fig.add_subplot())
        _save(fig, folder / names["effective_figure"], out)
    if names["power_scaling"] and result.power_scaling is not None:
        _atomic_write(folder / names["power_scaling"],
                      _csv(result.power_scaling, names["power_scaling"]))
    record = {**result.summary, "files": names["all"]}  # checked finite before staging
    _atomic_write(folder / names["json"],
                  (json.dumps(record, indent=2, allow_nan=False) + "\n").encode("utf-8"))


# --------------------------------------------------------------------------------------
# Choosing K ([selection]): every criterion over K, the sparse overfitted mixture


@dataclass(frozen=True)
class SelectionResult:
    """Every criterion over K and, with ``[selection.occupied]``, the posterior of the
    number of occupied components."""

    table: pd.DataFrame  # selection.csv: select_k, a row per K or per (covariance type, K)
    occupied: object | None  # bayes_gmm.selection.OccupiedComponents, or None
    summary: dict  # the contents of selection.json (JSON-ready, no NaN)
    time_s: float  # wall time of both, compilation included (not written: not a fact
    #                of the inputs)


def check_selection(config: ExperimentConfig, data: Dataset) -> None:
    """The Ks and ``k_max`` of ``[selection]`` against the data, before any fit.

    Raises
    ------
    ConfigError
        A K above the number of points (of the training part with ``"heldout"``), or a
        ``k_max`` above it, naming the key (``selection.ks``, ``selection.occupied.k_max``).
    """
    from bayes_gmm.selection import _check_k_max, _check_ks

    spec = config.selection
    n_samples = data.x.shape[0]
    try:
        ks = _check_ks(spec.k_values, n_samples, "ks", "points")
    except (TypeError, ValueError) as err:
        raise ConfigError(f"selection.ks: {err}", key="selection.ks") from None
    if "heldout" in spec.criteria:
        # The split of select_k: round(fraction * N) points held out, at least one.
        n_validation = max(1, round(spec.validation_fraction * n_samples))
        if n_samples - n_validation < ks[-1]:
            raise ConfigError(
                f"selection.validation_fraction: {spec.validation_fraction:g} holds out "
                f"{n_validation} of {n_samples} points and leaves {n_samples - n_validation} "
                f"for training, fewer than the largest K ({ks[-1]}). Lower "
                "validation_fraction or the largest value in ks, or leave \"heldout\" out "
                "of criteria.",
                key="selection.validation_fraction",
            )
    if spec.occupied is not None:
        try:
            _check_k_max(spec.occupied.k_max, n_samples)
        except (TypeError, ValueError) as err:
            key = "selection.occupied.k_max"
            raise ConfigError(f"{key}: {err}", key=key) from None


def run_selection(config: ExperimentConfig, data: Dataset) -> SelectionResult:
    """Compute every criterion of ``config.selection`` for every K and covariance type
    (:func:`bayes_gmm.selection.select_k`) and, with ``[selection.occupied]``, the
    posterior of the number of occupied components
    (:func:`bayes_gmm.selection.occupied_components`).

    The covariance types are ``[selection] covariance_type`` (one or a list; left out,
    ``[model]``'s); the sparse mixture takes that type when it is one, ``[model]``'s
    otherwise. The other EM settings (``n_init``, ``max_iter``, ``tol``) come from
    ``[model]``, the prior overrides from ``[prior]`` (the same for every K; the sparse
    mixture takes its own ``weight_concentration_prior``), the seed from the config.
    The main MAP fit (``[model] n_components``) is not touched.
    """
    import time

    from bayes_gmm.selection import occupied_components, select_k

    spec, model = config.selection, config.model
    covariance_type = spec.covariance_types(model)
    overrides = _prior_kwargs(config)
    began = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with step(_selection_words(spec, covariance_type)):
            table = select_k(
                data.x, spec.k_values, covariance_type=covariance_type,
                criteria=spec.criteria, validation_fraction=spec.validation_fraction,
                posterior=spec.posterior, num_chains=spec.num_chains,
                num_warmup=spec.num_warmup, num_samples=spec.num_samples,
                n_init=model.n_init, max_iter=model.max_iter, tol=model.tol,
                random_state=config.seed, **overrides,
            )
        occupied = None
        if spec.occupied is not None:
            sparse = spec.occupied
            with step(f"sparse overfitted mixture (k_max={sparse.k_max}): the Gibbs "
                      f"sampler, {sparse.num_chains} chains x {sparse.num_samples} draws"):
                occupied = occupied_components(
                    data.x, sparse.k_max,
                    covariance_type=(covariance_type if isinstance(covariance_type, str)
                                     else model.covariance_type),
                    weight_concentration_prior=sparse.weight_concentration_prior,
                    num_chains=sparse.num_chains, num_warmup=sparse.num_warmup,
                    num_samples=sparse.num_samples, thinning=sparse.thinning,
                    n_init=model.n_init, max_iter=model.max_iter, random_state=config.seed,
                    **{k: v for k, v in overrides.items()
                       if k != "weight_concentration_prior"},
                )
    elapsed = time.perf_counter() - began
    messages = list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught
                                  if issubclass(w.category, UserWarning)))
    return SelectionResult(table, occupied, _selection_summary(config, table, occupied,
                                                               messages), elapsed)


def _selection_words(spec, covariance_type) -> str:
    """What the progress line says while select_k runs."""
    ks = spec.k_values
    span = f"K={ks[0]}..{ks[-1]}" if ks == list(range(ks[0], ks[-1] + 1)) else (
        "K in " + ", ".join(map(str, ks)))
    if isinstance(covariance_type, str):
        models = f"{span}, {covariance_type}"
    else:
        models = (f"{span} x {', '.join(covariance_type)} "
                  f"({len(ks) * len(covariance_type)} models)")
    words = f"choosing K: {models}; {', '.join(spec.criteria)}"
    if "loo" in spec.criteria:
        words += (f" (LOO samples every model's posterior: {spec.posterior}, "
                  f"{spec.num_chains} chains x {spec.num_samples} draws)")
    return words


def selection_ranking(table) -> dict:
    """The best model and the runner-up of every criterion of a ``select_k`` table.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`bayes_gmm.selection.select_k`, one covariance type (index ``k``) or
        several (index ``(covariance_type, k)``).

    Returns
    -------
    dict
        ``{criterion: {"column", "better", "best", "runner_up"}}``, criteria in the
        table's order; ``best`` is ``{"covariance_type", "k", "value"}`` (the row
        ``select_k`` marked best), ``runner_up`` the best other row (its ``attrs
        ["runner_up"]`` when given) with ``difference`` = its value minus the best's
        (positive for the criteria where lower is better, negative otherwise) and, for
        LOO, ``dse``, the standard error of that difference (``arviz_stats.compare``),
        when the table has it; ``runner_up`` is None with a single model.
    """
    from bayes_gmm.selection import CRITERION_COLUMNS

    several = isinstance(table.index, pd.MultiIndex)
    single_type = None if several else table.attrs.get("covariance_type")
    runner_ups = table.attrs.get("runner_up") or {}
    ranking = {}

    def row(position, column):
        key = table.index[position]
        covariance_type, k = key if several else (single_type, key)
        return {"covariance_type": None if covariance_type is None else str(covariance_type),
                "k": int(k), "value": _finite_or_none(table[column].iloc[position])}

    for criterion, best in table.attrs["best"].items():
        column, direction = CRITERION_COLUMNS[criterion]
        values = table[column].to_numpy(np.float64)
        position = table.index.get_loc(best)
        entry = {"column": column, "better": "lower" if direction == "min" else "higher",
                 "best": row(position, column), "runner_up": None}
        if criterion in runner_ups and runner_ups[criterion] is not None:
            second = table.index.get_loc(runner_ups[criterion])
        else:
            others = values.copy()
            others[position] = np.nan
            finite = np.isfinite(others)
            second = None
            if finite.any():
                second = int(np.nanargmin(others) if direction == "min"
                             else np.nanargmax(others))
        if second is not None:
            runner = row(second, column)
            difference = float(values[second] - values[position])
            runner["difference"] = _finite_or_none(difference)
            if criterion == "loo" and {"loo_elpd_diff", "loo_dse"} <= set(table.columns):
                # arviz_stats.compare's difference to its best (this elpd minus the
                # best's), when that best is ours: then its standard error applies.
                if np.isclose(table["loo_elpd_diff"].iloc[second], difference):
                    runner["dse"] = _finite_or_none(table["loo_dse"].iloc[second])
            entry["runner_up"] = runner
        ranking[criterion] = entry
    return ranking


def occupied_table(occupied) -> pd.DataFrame:
    """occupied_components.csv: per number of occupied components (index ``n_occupied``,
    1..k_max), the posterior ``probability`` and the share of each chain's draws
    (``chain_0``, ``chain_1``, ...)."""
    table = occupied.per_chain.copy()
    table.columns = [f"chain_{c}" for c in table.columns]
    table.insert(0, "probability", occupied.probabilities)
    return table


def _selection_summary(config, table, occupied, messages) -> dict:
    """The headline of [selection], as in selection.json: ``best`` and ``runner_up`` per
    criterion as K (one covariance type) or ``{"covariance_type", "k"}`` (several), and
    ``ranking`` with their values and difference (:func:`selection_ranking`)."""
    several = isinstance(table.index, pd.MultiIndex)
    ranking = selection_ranking(table)

    def model(entry):
        if entry is None:
            return None
        if several:
            return {"covariance_type": entry["covariance_type"], "k": entry["k"]}
        return entry["k"]

    ks = table.index.get_level_values("k") if several else table.index
    types = table.attrs.get("covariance_type")
    summary = {
        "name": config.name,
        "bayes_gmm_version": bayes_gmm.__version__,
        "seed": config.seed,
        "settings": _plain_config(config.selection),
        "ks": sorted({int(k) for k in ks}),
        "covariance_types": [types] if isinstance(types, str) else list(types or ()),
        "best": {criterion: model(entry["best"]) for criterion, entry in ranking.items()},
        "runner_up": {criterion: model(entry["runner_up"])
                      for criterion, entry in ranking.items()},
        "ranking": ranking,
        "n_samples": int(table.attrs["n_samples"]),
        "n_validation": int(table.attrs["n_validation"]),
        "sign_convention": table.attrs["sign_convention"],
        "occupied": None,
        "warnings": messages,
    }
    if occupied is not None:
        per_chain = occupied.per_chain
        summary["occupied"] = {
            "k_max": occupied.k_max,
            "weight_concentration_prior": occupied.weight_concentration_prior,
            "mode": occupied.mode,
            "mean": float(occupied.mean),
            "probabilities": {str(n): float(p) for n, p in occupied.probabilities.items()
                              if p > 0},
            "chain_modes": [int(per_chain[c].idxmax()) for c in per_chain.columns],
            "reference": None,
            "reference_probability": None,
        }
        reference = config.selection.occupied.reference
        if reference is not None:
            low, high = reference
            inside = occupied.probabilities.loc[low:high].sum()  # empty (0) beyond k_max
            summary["occupied"]["reference"] = [low, high]
            summary["occupied"]["reference_probability"] = float(inside)
    return summary


def _selection_file_names(config) -> dict:
    ext = config.output.format
    names = {"json": "selection.json", "csv": "selection.csv",
             "figure": f"selection.{ext}", "occupied_csv": None, "occupied_figure": None}
    if config.selection.occupied is not None:
        names["occupied_csv"] = "occupied_components.csv"
        names["occupied_figure"] = f"occupied_components.{ext}"
    names["all"] = [name for name in names.values() if name is not None]
    return names


def _write_selection(folder: Path, config, result: SelectionResult, names) -> None:
    """selection.csv, selection.<ext>, occupied_components.csv and .<ext>, selection.json."""
    out = config.output
    # With several covariance types the index (covariance_type, k) gives the CSV a
    # covariance_type column before k.
    _atomic_write(folder / names["csv"], _csv(result.table, names["csv"]))
    n_panels = sum(column in result.table.columns for column, *_ in plots.SELECTION_PANELS)
    n_columns = min(n_panels, 3)
    fig = Figure(figsize=(3.6 * n_columns + 1.2, 3.0 * -(-n_panels // n_columns) + 0.4),
                 layout="constrained")  # + the legend of the covariance types
    plots.selection_figure(result.table, fig=fig)
    _save(fig, folder / names["figure"], out)
    if result.occupied is not None:
        text = occupied_table(result.occupied).to_csv(float_format="%.10g")
        _atomic_write(folder / names["occupied_csv"], text.encode("utf-8"))
        fig = Figure(figsize=(6.0, 4.0), layout="constrained")
        plots.occupied_components_figure(result.occupied, ax=fig.add_subplot(),
                                         reference=config.selection.occupied.reference)
        _save(fig, folder / names["occupied_figure"], out)
    record = {**result.summary, "files": names["all"]}  # checked finite before staging
    _atomic_write(folder / names["json"],
                  (json.dumps(record, indent=2, allow_nan=False) + "\n").encode("utf-8"))


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
    if data.rows is not None:
        record["data"]["subsample_rows"] = data.rows.tolist()  # 0-based, of the full data
    if data.labels is not None:
        record["data"]["agreement_with_true_labels"] = _agreement(
            data.labels, gmm.predict(data.frame), k
        )
    return record


# --------------------------------------------------------------------------------------
# The posterior record (posterior.json) and tables


def _with_run_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The diagnostics table with the run's divergences and sampling time on every row.

    Both are facts of the whole run, repeated so that the CSV file answers on its own;
    ``n_divergences`` is NaN for samplers without divergences (Gibbs, Laplace).
    """
    table = table.copy()
    n_divergences = table.attrs.get("n_divergences")
    table["n_divergences"] = np.nan if n_divergences is None else float(n_divergences)
    sampling_time = table.attrs.get("sampling_time")
    table["sampling_time_s"] = np.nan if sampling_time is None else float(sampling_time)
    return table


def _finite_or_none(value):
    """A float for JSON, or None where the statistic is undefined (NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _posterior_summary(method, tree, comparison, table, spec, messages) -> dict:
    """The headline of one posterior run: settings, time, diagnostics, MAP against it."""
    attrs = tree.attrs
    params = comparison.drop(index="lp")  # the MAP's lp lies above every draw: the mode
    n_chains, n_draws = int(table.attrs["n_chains"]), int(table.attrs["n_draws"])
    inside = int(params["map_in_hdi"].sum())
    summary = {
        "method": method,
        "num_chains": n_chains,
        "num_samples": n_draws,
        "num_warmup": None if method == "laplace" else int(attrs.get("num_warmup", 0)),
        "thinning": int(attrs.get("thinning", 1)),
        "init": str(attrs.get("init", "map")),
        "init_jitter": float(attrs.get("init_jitter", 0.0)),
        "sampling_time_s": _finite_or_none(attrs.get("sampling_time", float("nan"))),
        # Over every row of diagnostics.csv (parameters, lp, log_likelihood, sorted weights);
        # null where all are NaN (R-hat of a single chain).
        "max_r_hat": _finite_or_none(table["r_hat"].max()),
        "min_ess_bulk": _finite_or_none(table["ess_bulk"].min()),
        "min_ess_tail": _finite_or_none(table["ess_tail"].min()),
        "divergences": table.attrs.get("n_divergences"),  # null: no such thing (Gibbs, Laplace)
        "relabelled_fraction": _finite_or_none(attrs.get("relabelled_fraction", 0.0)),
        "hdi_prob": float(spec.hdi_prob),
        "map_in_hdi": inside,
        "n_parameters": len(params),
        "map_in_hdi_fraction": inside / len(params),
        "lp_map": _finite_or_none(comparison.loc["lp", "map"]),
        "lp_posterior_mean": _finite_or_none(comparison.loc["lp", "mean"]),
        "lp_frac_draws_above_map": _finite_or_none(comparison.loc["lp", "frac_draws_above_map"]),
        # Label invariant: the share of draws with each number of occupied components.
        "occupied_components": _occupied_shares(tree),
    }
    if "laplace_newton_steps" in attrs:
        summary["laplace_newton_steps"] = int(attrs["laplace_newton_steps"])
        summary["laplace_centre_shift"] = _finite_or_none(attrs["laplace_centre_shift"])
    summary["notes"] = _notes(summary)
    summary["warnings"] = list(messages)
    return summary


def _occupied_shares(tree) -> dict[str, float]:
    """Fraction of draws by number of occupied components (Gibbs: holding an allocated
    point; other methods: weight above 1 / N), keys as strings for JSON."""
    counts = diagnostics.label_invariant_summaries(tree)["n_occupied"].values.ravel()
    values, frequency = np.unique(counts, return_counts=True)
    return {str(int(v)): float(f) / counts.size for v, f in zip(values, frequency, strict=True)}


def _notes(summary) -> list[str]:
    """What a careful reader would flag in the headline numbers."""
    notes = []
    n_chains = summary["num_chains"]
    if summary["max_r_hat"] is not None and summary["max_r_hat"] > R_HAT_LIMIT:
        notes.append(
            f"R-hat up to {summary['max_r_hat']:.3f} > {R_HAT_LIMIT}: the chains disagree; "
            "run longer (num_warmup, num_samples) or look for several modes."
        )
    if summary["max_r_hat"] is None and n_chains == 1:
        notes.append("R-hat needs at least two chains (num_chains >= 2).")
    least = min((v for v in (summary["min_ess_bulk"], summary["min_ess_tail"])
                 if v is not None), default=None)
    if least is not None and least < ESS_PER_CHAIN * n_chains:
        notes.append(
            f"effective sample size down to {least:.0f} < {ESS_PER_CHAIN} per chain: "
            "intervals and tails are rough; draw more (num_samples)."
        )
    if summary["divergences"]:
        notes.append(
            f"{summary['divergences']} divergent transitions: NUTS could not follow the "
            "posterior everywhere; results may be biased."
        )
    above = summary["lp_frac_draws_above_map"]
    if above:
        notes.append(
            f"{100 * above:.1f}% of the draws have a higher log posterior than the MAP: "
            "EM stopped short of the mode or found a lesser one (raise n_init, lower tol)."
        )
    return notes


def _posterior_record(config, posterior: dict, names) -> dict:
    methods = {}
    for method, result in posterior.items():
        methods[method] = {**result.summary, "files": names["posterior"][method]["all"]}
    return {
        "name": config.name,
        "bayes_gmm_version": bayes_gmm.__version__,
        "seed": config.seed,
        "method": config.posterior.method,
        "settings": _plain_config(config.posterior),
        "methods": methods,
        "files": ["posterior.json"] + ([names["forest"]] if names["forest"] else []),
    }


def _plain_config(section) -> dict:
    """A config section as JSON values (lists for tuples)."""
    return json.loads(json.dumps(asdict(section)))


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
        **{name: _version(name) for name in ("scipy", "numpyro", "arviz", "xarray", "h5py",
                                             "h5netcdf", "matplotlib", "pandas")},
        "device": str(device),
        "device_kind": device.device_kind,
        "device_platform": device.platform,
        "device_count": jax.device_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "dtype": str(gmm.means_.dtype),
    }


# Facts of one run rather than of its inputs (a clock time, wall times). They go to
# run.json, not into map.json or the posterior files: those are then bit-identical for
# the same config, seed, versions and device.
RUN_FACTS = ("created_at", "sampling_time")


def _without_run_facts(tree):
    """A shallow copy of ``tree`` without the run-specific attributes (of the root, and
    the ``created_at`` ArviZ stamps on every group)."""
    tree = tree.copy()
    for node in tree.subtree:
        node.attrs = {k: v for k, v in node.attrs.items() if k not in RUN_FACTS}
    return tree


def _run_record(posterior: dict, sweep_time_s: float | None = None) -> bytes:
    """run.json: when the run happened and how long sampling took, per method (and the
    prior sweep, with [sensitivity])."""
    record = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "sampling_time_s": {method: _finite_or_none(result.tree.attrs.get("sampling_time",
                                                                           float("nan")))
                            for method, result in posterior.items()},
        "posterior_created_at": {method: result.tree.attrs.get("created_at")
                                 for method, result in posterior.items()},
    }
    if sweep_time_s is not None:
        record["sweep_time_s"] = _finite_or_none(sweep_time_s)
    return (json.dumps(record, indent=2, allow_nan=False) + "\n").encode("utf-8")


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _csv(table: pd.DataFrame, name: str, index: bool = True) -> bytes:
    """A table as CSV: an empty field where a statistic is undefined (R-hat of one chain,
    divergences of Gibbs and Laplace, frac_draws_above_map outside the lp row), never the
    text NaN; an infinite value stops the run, as in :func:`_check_finite`."""
    numbers = table.select_dtypes("number").to_numpy(np.float64)
    if np.isinf(numbers).any():
        row, col = np.argwhere(np.isinf(numbers))[0]
        raise ValueError(
            f"the run gave an infinite value in {name} (row {table.index[row]!r}, column "
            f"{table.select_dtypes('number').columns[col]!r}); no results were written. "
            "Enable float64 (JAX_ENABLE_X64=1) or strengthen the prior."
        )
    return table.to_csv(index=index, na_rep="", float_format="%.10g").encode("utf-8")


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
    names = {"iterations": [], "grid": None, "log_posterior": None, "posterior": {},
             "forest": None}
    if config.posterior is not None:
        for n, method in enumerate(config.posterior.methods):
            suffix = "" if n == 0 else f"_{method}"
            files = {"tree": f"posterior{suffix}.nc", "comparison": f"comparison{suffix}.csv",
                     "diagnostics": f"diagnostics{suffix}.csv", "figures": {}}
            if config.output.posterior_figures:
                files["figures"] = {
                    figure: f"{figure}{suffix}.{ext}"
                    for figure in ("map_vs_posterior", *TRACE_FIGURES)
                }
            files["all"] = [files["tree"], files["comparison"], files["diagnostics"],
                            *files["figures"].values()]
            names["posterior"][method] = files
        if config.output.posterior_figures:
            names["forest"] = f"forest.{ext}"
    if config.output.iteration_figures:
        names["iterations"] = [f"iterations/iteration_{t:0{width}d}.{ext}" for t in iterations]
        names["grid"] = f"iterations_grid.{ext}"
    if config.output.log_posterior_figure:
        names["log_posterior"] = f"log_posterior.{ext}"
    names["all"] = (
        ["map.json", "run.json"]
        + (["config.toml"] if with_config else [])
        + (["posterior.json"] if config.posterior is not None else [])
        + [name for files in names["posterior"].values() for name in files["all"]]
        + ([names["forest"]] if names["forest"] else [])
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


def _write_posterior(folder: Path, config, data, gmm, posterior: dict, names) -> None:
    """Trees, tables and figures of every posterior method (and the joint forest plot)."""
    out = config.output
    features = out.features if data.x.shape[1] >= 2 else (0, 1)
    for method, result in posterior.items():
        files = names["posterior"][method]
        diagnostics.save_datatree(_without_run_facts(result.tree), folder / files["tree"])
        for key, table in (("comparison", result.comparison),
                           ("diagnostics", result.diagnostics)):
            _atomic_write(folder / files[key], _csv(table, files[key]))
        figures = files["figures"]
        if not figures:
            continue
        fig = Figure(figsize=(7.0, 6.0), layout="constrained")
        plots.map_vs_posterior(gmm, result.tree, data.x, ax=fig.add_subplot(),
                               n_draws=FIGURE_DRAWS, features=features)
        _save(fig, folder / figures["map_vs_posterior"], out)
        for figure, var_names in TRACE_FIGURES.items():
            n_rows = min(sum(len(plots._trace_rows(result.tree, name, False))
                             for name in var_names), plots.TRACE_MAX_ROWS)
            fig = Figure(figsize=plots._trace_size(n_rows), layout="constrained")
            plots.trace(result.tree, var_names, fig=fig)
            _save(fig, folder / figures[figure], out)
    if names["forest"]:
        tables = {method: result.comparison for method, result in posterior.items()}
        reference = next(iter(tables.values()))
        fig = Figure(figsize=plots._forest_size(len(reference), 4), layout="constrained")
        plots.forest(tables, fig=fig)
        _save(fig, folder / names["forest"], out)


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


def _give_folder_default_permissions(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder; a results folder gets the usual mode."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


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
