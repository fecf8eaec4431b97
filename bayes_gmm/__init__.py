"""bayes_gmm: Bayesian Gaussian mixture models.

A JIT-compiled JAX EM finds the MAP estimate under conjugate priors (Dirichlet on the
weights, Normal-Inverse-Wishart on each component); a scikit-learn style estimator and a
command-line tool sit on top.
"""

from importlib.metadata import PackageNotFoundError, version

from bayes_gmm.diagnostics import compare_map_posterior
from bayes_gmm.em import EMInfo, GMMParams, e_step, fit_map, log_posterior, m_step
from bayes_gmm.estimator import BayesianGMM
from bayes_gmm.exceptions import ConvergenceWarning, NotFittedError
from bayes_gmm.priors import GMMPrior, default_prior
from bayes_gmm.selection import OccupiedComponents, occupied_components, select_k
from bayes_gmm.sensitivity import power_scaling_sensitivity, prior_sweep

# Submodules a user reaches as attributes (``bayes_gmm.plots.forest(...)``) after a plain
# ``import bayes_gmm``; imported on first use, so matplotlib loads only when plotting.
_LAZY_SUBMODULES = ("datasets", "diagnostics", "gibbs", "plots", "posterior", "streaming",
                    "validation")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"bayes_gmm.{name}")
    raise AttributeError(f"module 'bayes_gmm' has no attribute {name!r}")


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
