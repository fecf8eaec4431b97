"""Run one experiment config: load the data, fit, and write a results folder safely.

This is the layer between :mod:`bayes_gmm.config` (what to do) and :mod:`bayes_gmm.cli`
(how a person asks for it): it calls only the layers below (datasets, the estimator,
plots) and never prints. :func:`run_experiment` returns an :class:`ExperimentResult` the
CLI summarises.

The results folder ``<output_dir>/<name>/`` holds ``map.json`` (the estimate, the prior,
the seed, the config and the software and device it ran on), the EM iteration figures
and the log-posterior trace. With a ``[posterior]`` section the posterior is sampled
from the MAP after the fit (:meth:`bayes_gmm.BayesianGMM.sample_posterior`) and the
folder also holds ``posterior.nc`` (the draws as an ArviZ 1.x DataTree),
``comparison.csv`` (MAP against posterior, :func:`bayes_gmm.compare_map_posterior`),
``diagnostics.csv`` (R-hat, ESS, divergences, time), ``posterior.json`` (the settings
and headline diagnostics) and the figures of :mod:`bayes_gmm.plots` (MAP and posterior
ellipses, a forest plot, trace plots); each method of ``compare_methods`` writes the
same files with its name as a suffix. Everything is computed before the first file is
written. The folder is never half-written and never silently replaced:

- an existing folder is kept unless ``overwrite=True``;
- every file is written under a temporary name and renamed (:func:`os.replace`), and the
  whole folder is first assembled in a hidden temporary sibling
  (``.<name>.<random>.partial``) that is renamed into place only when complete, so an
  interrupted run leaves nothing that looks like a finished result;
- ``map.json`` and ``posterior.json`` never hold NaN or infinity: the run fails instead,
  before anything is moved into place; a statistic that is undefined (R-hat of a single
  chain, divergences of a sampler without them) is ``null`` there and ``NaN`` in the CSV
  tables.
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
        Show NumPyro's progress bar (NUTS; the Gibbs sampler and Laplace have none).

    Returns
    -------
    dict of str to PosteriorResult
        The main method first, then ``compare_methods`` in order.
    """
    spec = config.posterior
    results = {}
    for method in spec.methods:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tree = gmm.sample_posterior(data.frame, method=method,
                                        progress_bar=progress and method == "nuts",
                                        **spec.sampler_kwargs())
            comparison = diagnostics.compare_map_posterior(gmm, tree, hdi_prob=spec.hdi_prob)
            table = diagnostics.diagnostics_table(tree)
        messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        table = _with_run_columns(table)
        summary = _posterior_summary(method, tree, comparison, table, spec, messages)
        results[method] = PosteriorResult(method, tree, comparison, table, summary)
    return results


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
        Show the sampler's progress bar on stderr (NUTS).

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
        From the estimator, when the fit itself became non-finite, or from the Laplace
        approximation when the curvature at the MAP is not positive definite.
    """
    root = Path(config.output_dir if output_dir is None else output_dir)
    final = root / config.name
    _check_target(final, overwrite)

    data = load_data(config)
    _check_features(config, data)
    gmm, messages = fit(config, data)
    posterior = {} if config.posterior is None else sample(config, data, gmm, progress)
    iterations = _figure_iterations(gmm.n_iter_, config.output.max_iteration_figures)
    names = _file_names(config, iterations, config_path is not None)
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
        _write_figures(staging, config, data, gmm, iterations, names)
        if posterior:
            _write_posterior(staging, config, data, gmm, posterior, names)
            _atomic_write(staging / "posterior.json", posterior_text.encode("utf-8"))
        if config_path is not None:
            _atomic_write(staging / "config.toml", Path(config_path).read_bytes())
        # map.json last: inside the staging folder too, its presence means "complete".
        _atomic_write(staging / "map.json", text.encode("utf-8"))
        _move_into_place(staging, final, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = tuple(sorted(str(p.relative_to(final)) for p in final.rglob("*") if p.is_file()))
    return ExperimentResult(config, data, gmm, final, files, record, messages, posterior,
                            posterior_record)


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
        # Over every scalar parameter, lp and log_likelihood; null where all are NaN
        # (R-hat of a single chain).
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
    }
    if "laplace_newton_steps" in attrs:
        summary["laplace_newton_steps"] = int(attrs["laplace_newton_steps"])
        summary["laplace_centre_shift"] = _finite_or_none(attrs["laplace_centre_shift"])
    summary["notes"] = _notes(summary)
    summary["warnings"] = list(messages)
    return summary


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
        ["map.json"]
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
        diagnostics.save_datatree(result.tree, folder / files["tree"])
        # NaN (written "NaN") where a statistic is undefined: frac_draws_above_map outside
        # the lp row, R-hat of one chain, n_divergences of Gibbs and Laplace.
        for key, table in (("comparison", result.comparison),
                           ("diagnostics", result.diagnostics)):
            text = table.to_csv(na_rep="NaN", float_format="%.10g")
            _atomic_write(folder / files[key], text.encode("utf-8"))
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
