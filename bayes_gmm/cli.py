"""The ``bayes-gmm`` command: run an experiment config and say what came out.

::

    bayes-gmm run configs/em_walkthrough.toml [--output-dir DIR] [--overwrite] [--quiet]
    bayes-gmm run configs/old_faithful.toml       (MAP, then the posterior by NUTS)
    bayes-gmm run configs/prior_sensitivity.toml  (MAP, posterior, then a prior sweep)
    bayes-gmm run configs/choosing_k.toml         (MAP, then every criterion for K)

This module only parses arguments, calls :func:`bayes_gmm.experiment.run_experiment`,
prints a short summary (with a ``[posterior]`` section also its headline: method, chains
x draws, time, R-hat, ESS, divergences and where the MAP sits in the posterior; with a
``[sensitivity]`` section the sweep's size, time and range of effective components, and
the count of prior- and likelihood-sensitive parameters; with a ``[selection]`` section
the model each criterion prefers, the runner-up and their difference, and the posterior
mode of the number of occupied components), and turns expected failures into one line on
stderr (no traceback) and an exit status:

- 0: success;
- 2: the command or the config cannot be used as written (a usage error, a
  :class:`~bayes_gmm.config.ConfigError`, or a results folder that exists without
  ``--overwrite``): nothing ran;
- 1: the run failed (data that cannot be read or fitted, a non-finite result); nothing
  was written;
- 130: interrupted; nothing was written.

Each step that can take a while (fitting the MAP, each sampler, the prior sweep, choosing
K, drawing the figures) is announced on stderr with its time when done,
``[bayes-gmm] fitting the MAP (K=2, full)... 2.4 s`` (:mod:`bayes_gmm.progress`), and
while NUTS samples its progress bar runs there too; ``--quiet`` turns off these lines,
the bar and the summary. Anything else is a bug and keeps its traceback. Figures are drawn on bare
:class:`matplotlib.figure.Figure` objects, so the command never needs a display or
pyplot's global state.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import bayes_gmm
from bayes_gmm.config import ConfigError, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv=None) -> int:
    """Entry point of ``bayes-gmm``; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name; by default ``sys.argv[1:]``.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its message (or --help)
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-gmm",
        description="Bayesian Gaussian mixture models: MAP estimates by EM under "
        "conjugate priors and their posterior (NUTS, Gibbs, Laplace), from experiment "
        "configs (TOML).",
    )
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {bayes_gmm.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="fit the model a config describes and write its results folder",
        description="Fit the model a config describes and write <output_dir>/<name>/: "
        "map.json, EM iteration figures and the log-posterior trace; with a [posterior] "
        "section also posterior.nc, comparison.csv, diagnostics.csv, posterior.json and "
        "the posterior figures; with a [sensitivity] section also sweep.nc, sweep.csv, "
        "sweep.png, effective_components.png, sensitivity.json and (with [posterior]) "
        "power_scaling.csv; with a [selection] section also selection.csv, "
        "selection.png, selection.json and (with [selection.occupied]) "
        "occupied_components.csv and occupied_components.png.",
    )
    run.add_argument("config", metavar="CONFIG", help="experiment config (TOML)")
    run.add_argument("--output-dir", metavar="DIR",
                     help="folder for the results folder (default: output_dir in the "
                     "config, 'results')")
    run.add_argument("--overwrite", action="store_true",
                     help="replace an existing results folder of the same name")
    run.add_argument("--quiet", action="store_true",
                     help="no progress lines or bar, and print nothing on success")
    return parser


def _run(args) -> int:
    # Imported here: `bayes-gmm --help` should not wait for JAX and matplotlib.
    from bayes_gmm.experiment import run_experiment

    try:
        config = load_config(args.config)
        bayes_gmm.compilation_cache.configure(config.compilation_cache)  # before compiling
        result = run_experiment(
            config, config_path=args.config, output_dir=args.output_dir,
            overwrite=args.overwrite, progress=not args.quiet,
        )
    except (ConfigError, FileExistsError) as err:
        return _error(err, EXIT_USAGE)
    except (ValueError, TypeError, FloatingPointError, OSError) as err:
        return _error(err, EXIT_FAILED)
    except KeyboardInterrupt:
        print("bayes-gmm: interrupted; no results were written.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RuntimeError as err:  # XLA's runtime errors (out of memory, ...) are these
        _error(err, EXIT_FAILED)
        print("bayes-gmm: the computation itself failed (above); no results were written. "
              "Out of memory: use fewer points, chains or draws, or a smaller chunk_size.",
              file=sys.stderr)
        return EXIT_FAILED
    if not args.quiet:
        print(summary(result))
    return EXIT_OK


def _error(err: BaseException, status: int) -> int:
    message = " ".join(str(err).split())  # one line, whatever the message held
    print(f"bayes-gmm: error: {message}", file=sys.stderr)
    return status


def summary(result) -> str:
    """A few lines on what was fitted and where the results are.

    Parameters
    ----------
    result : bayes_gmm.experiment.ExperimentResult

    Returns
    -------
    str
    """
    gmm, config, data = result.estimator, result.config, result.data
    n, d = data.x.shape
    model = config.model
    status = "converged" if gmm.converged_ else "NOT converged"
    lines = [
        f"bayes-gmm {bayes_gmm.__version__}: {config.name}",
        f"  data           {data.description}: {n} points x {d} features "
        f"({', '.join(data.columns)})",
        f"  model          K = {model.n_components}, covariance_type = "
        f"{model.covariance_type!r}, init_params = {model.init_params!r}, seed {config.seed}",
        f"  EM             {gmm.n_iter_} iterations, {status} (tol {model.tol:g})",
        f"  log posterior  {gmm.lower_bound_:.4f} (log likelihood {gmm.log_likelihood_:.4f})",
    ]
    agreement = result.record["data"].get("agreement_with_true_labels")
    if agreement is not None:
        lines.append(f"  true labels    {100 * agreement:.1f}% recovered (after matching labels)")
    lines.append("  component      weight   mean")
    with np.printoptions(precision=3, suppress=True):
        for k, (weight, mean) in enumerate(zip(gmm.weights_, gmm.means_, strict=True)):
            dead = "  (empty)" if gmm.dead_components_[k] else ""
            lines.append(f"  {k + 1:<14} {weight:6.3f}   {mean}{dead}")
    for message in result.warnings:
        lines.append(f"  warning        {' '.join(message.split())}")
    for method, posterior in result.posterior.items():
        lines += _posterior_lines(method, posterior.summary)
    if getattr(result, "sensitivity", None) is not None:
        lines += _sensitivity_lines(result.sensitivity)
    if getattr(result, "selection", None) is not None:
        lines += _selection_lines(result.selection)
    n_figures = sum(name.startswith("iterations/") for name in result.files)
    extra = f", {n_figures} iteration figures" if n_figures else ""
    if result.posterior:
        extra += ", posterior.nc, comparison.csv, diagnostics.csv"
    if getattr(result, "sensitivity", None) is not None:
        extra += ", sweep.nc, sweep.csv"
    if getattr(result, "selection", None) is not None:
        extra += ", selection.csv"
    lines.append(f"  results        {result.path}/ (map.json{extra}; "
                 f"{len(result.files)} files)")
    return "\n".join(lines)


def _posterior_lines(method, summary) -> list[str]:
    """The headline of one posterior run, as in posterior.json."""
    warmup = "" if summary["num_warmup"] is None else f" after {summary['num_warmup']} warm-up"
    seconds = summary["sampling_time_s"]
    lines = [
        f"  posterior      {method}: {summary['num_chains']} chains x "
        f"{summary['num_samples']} draws{warmup}"
        + ("" if seconds is None else f", {seconds:.1f} s")
    ]
    r_hat = summary["max_r_hat"]
    ess_bulk, ess_tail = summary["min_ess_bulk"], summary["min_ess_tail"]
    parts = [
        "max R-hat " + ("n/a (one chain)" if r_hat is None else f"{r_hat:.3f}"),
        "min ESS " + ("n/a" if ess_bulk is None else f"{ess_bulk:.0f} bulk")
        + ("" if ess_tail is None else f", {ess_tail:.0f} tail"),
    ]
    if summary["divergences"] is not None:
        parts.append(f"{summary['divergences']} divergences")
    if summary["relabelled_fraction"]:
        parts.append(f"{100 * summary['relabelled_fraction']:.1f}% of draws relabelled")
    lines.append(f"    diagnostics  {', '.join(parts)}")
    lines.append(
        f"    MAP          inside the {100 * summary['hdi_prob']:g}% HDI for "
        f"{summary['map_in_hdi']} of {summary['n_parameters']} parameters; log posterior "
        f"{_number(summary['lp_map'])} (posterior mean "
        f"{_number(summary['lp_posterior_mean'])})"
    )
    for note in summary["notes"] + summary["warnings"]:
        lines.append(f"    note         {' '.join(note.split())}")
    return lines


def _sensitivity_lines(result) -> list[str]:
    """The headline of a prior sweep (and of power scaling), as in sensitivity.json."""
    summary = result.summary
    grid = summary["grid"]
    combine = summary["settings"]["combine"]
    sizes = f" {'x' if combine == 'cross' else 'zip'} ".join(
        f"{name} {len(values)}" for name, values in grid.items())
    effective = summary["n_effective_components"]
    threshold = summary["settings"]["weight_threshold"]
    lines = [
        f"  prior sweep    {summary['n_points']} MAP fits ({sizes}) in "
        f"{result.sweep_time_s:.1f} s; {summary['converged_points']} converged",
        f"    effective    {effective['min']} to {effective['max']} components (weight > "
        f"{threshold:g}); points with each: "
        + ", ".join(f"{k}: {n}" for k, n in effective["points_with"].items()),
    ]
    power = summary["power_scaling"]
    if power is not None:
        lines.append(
            f"    power scaling  {power['method']}: {len(power['prior_sensitive'])} of "
            f"{power['n_parameters']} parameters prior-sensitive, "
            f"{len(power['likelihood_sensitive'])} likelihood-sensitive (psense >= "
            f"{power['threshold']:g}); max prior {_number(power['max_prior'])}"
        )
    return lines


# How the summary names each criterion, and the precision of its values.
CRITERION_NAMES = {"bic": ("BIC", "BIC", 1), "icl": ("ICL", "ICL", 1),
                   "aic": ("AIC", "AIC", 1),
                   "heldout": ("held-out", "log density per point", 4),
                   "loo": ("LOO", "elpd", 1)}


def _selection_lines(result) -> list[str]:
    """The headline of [selection], as in selection.json: per criterion the best model,
    the runner-up and how far behind it is."""
    summary = result.summary
    ks = summary["ks"]
    span = f"K = {ks[0]}..{ks[-1]}" if ks == list(range(ks[0], ks[-1] + 1)) else (
        "K in " + ", ".join(map(str, ks)))
    types = summary.get("covariance_types") or []
    several = len(types) > 1
    models = (f" x {', '.join(types)} ({len(ks) * len(types)} models)" if several
              else f" ({types[0]})" if types else "")
    lines = [f"  choosing K     {span}{models} in {result.time_s:.1f} s"]
    for criterion, entry in summary["ranking"].items():
        name, value_name, digits = CRITERION_NAMES.get(criterion, (criterion, criterion, 2))
        best, runner = entry["best"], entry["runner_up"]
        text = (f"best {_model(best, several)} ({value_name} "
                f"{_value(best['value'], digits)})")
        if runner is None:
            text += "; no runner-up (one model)"
        else:
            text += f"; runner-up {_model(runner, several)}, {_difference(runner, digits)}"
            if runner.get("dse") is not None:
                text += f" (se {runner['dse']:.{digits}f})"
        lines.append(f"    {name:<12} {text}")
    occupied = summary["occupied"]
    if occupied is not None:
        shown = ", ".join(f"{n}: {p:.2f}" for n, p in occupied["probabilities"].items()
                          if p >= 0.005)
        lines.append(
            f"    occupied     mode {occupied['mode']} (mean {occupied['mean']:.2f}) of "
            f"k_max = {occupied['k_max']}, e0 = {occupied['weight_concentration_prior']:g}; "
            f"P: {shown}; chain modes {occupied['chain_modes']}"
        )
    for message in summary["warnings"]:
        lines.append(f"    note         {message}")
    return lines


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _model(entry, several) -> str:
    return f"{entry['covariance_type']} K={entry['k']}" if several else f"K={entry['k']}"


def _value(value, digits) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _difference(runner, digits) -> str:
    difference = runner.get("difference")
    if difference is None:
        return "difference n/a"
    if difference != 0 and abs(difference) < 0.5 * 10.0 ** -digits:
        return f"{difference:+.2g}"  # a near tie, not a rounded zero
    return f"{difference:+.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
