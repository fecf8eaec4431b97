"""bayes_gmm: Bayesian Gaussian mixture models.

A JIT-compiled JAX EM finds the MAP estimate under conjugate priors (Dirichlet on the
weights, Normal-Inverse-Wishart on each component); a scikit-learn style estimator and a
command-line tool sit on top.

``import bayes_gmm`` loads JAX and the EM core only: the names and submodules that need
NumPyro, ArviZ, xarray or matplotlib are imported on first use (below), so a script that
fits a MAP estimate starts in well under a second. The import also turns on JAX's
persistent compilation cache (:mod:`bayes_gmm.compilation_cache`).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from bayes_gmm import compilation_cache
from bayes_gmm.em import EMInfo, GMMParams, e_step, fit_map, log_posterior, m_step
from bayes_gmm.estimator import BayesianGMM
from bayes_gmm.exceptions import ConvergenceWarning, NotFittedError
from bayes_gmm.priors import GMMPrior, default_prior

if TYPE_CHECKING:  # for type checkers and editors; at run time these are lazy (below)
    from bayes_gmm.diagnostics import compare_map_posterior
    from bayes_gmm.selection import OccupiedComponents, occupied_components, select_k
    from bayes_gmm.sensitivity import power_scaling_sensitivity, prior_sweep

compilation_cache.enable_default()

# Submodules a user reaches as attributes (``bayes_gmm.plots.forest(...)``) after a plain
# ``import bayes_gmm``; imported on first use, so matplotlib loads only when plotting.
_LAZY_SUBMODULES = ("datasets", "diagnostics", "gibbs", "plots", "posterior", "selection",
                    "sensitivity", "streaming", "validation")

# Public names whose modules import ArviZ and xarray (1 s of the import's 2 s when they
# were eager) or pandas (0.2 to 0.4 s): imported on first use, ``from bayes_gmm import
# prior_sweep`` included.
_LAZY_NAMES = {
    "OccupiedComponents": "selection",
    "occupied_components": "selection",
    "select_k": "selection",
    "compare_map_posterior": "diagnostics",
    "power_scaling_sensitivity": "sensitivity",
    "prior_sweep": "sensitivity",
}


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"bayes_gmm.{name}")
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f"bayes_gmm.{_LAZY_NAMES[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'bayes_gmm' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY_SUBMODULES, *_LAZY_NAMES})


try:
    __version__ = version("bayes_gmm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "compare_map_posterior",
    "BayesianGMM",
    "ConvergenceWarning",
    "NotFittedError",
    "EMInfo",
    "GMMParams",
    "GMMPrior",
    "default_prior",
    "e_step",
    "fit_map",
    "log_posterior",
    "m_step",
    "OccupiedComponents",
    "occupied_components",
    "select_k",
    "power_scaling_sensitivity",
    "prior_sweep",
]
