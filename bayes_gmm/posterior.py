"""The posterior: one entry point, three ways to reach it, one DataTree out.

:func:`sample` starts from the MAP estimate of the EM core and returns an ArviZ 1.x
``xarray.DataTree`` (built by :func:`bayes_gmm.diagnostics.to_datatree`: draws aligned to
the MAP, per-point log likelihoods, log prior, data and the MAP itself). The methods:

- ``"nuts"``: NumPyro's NUTS on :func:`bayes_gmm.model.gmm_model` (the labels summed out),
  every chain started at the MAP by ``init_to_value`` (or, for comparison, at NumPyro's
  default random initialisation with ``init="default"``). Chains are vectorised on one
  device and run in parallel when there are as many devices as chains.
- ``"gibbs"``: the conjugate blocked Gibbs sampler of :mod:`bayes_gmm.gibbs`, started at
  the MAP.
- ``"laplace"``: a Gaussian approximation in NumPyro's unconstrained parametrisation of
  the same model (stick-breaking weights, Cholesky factors with log diagonals, log
  variances). Its centre is the mode of the *unconstrained* density, which includes the
  log-Jacobian of the transform and so sits O(1/N) away from the MAP; Newton steps from
  the MAP find it, the Hessian gives the curvature there, and independent draws are
  mapped back to the natural parameters (:mod:`bayes_gmm.laplace`, which pads small
  problems so that one compiled program serves every K). This is the Laplace
  approximation whose draws approximate the posterior of theta; a Gaussian at the MAP
  itself with the curvature of the density of theta would not be a density of the
  unconstrained variables at all.

Every method returns its draws in the same layout, so MAP, Laplace and full posterior
are compared by the same tables and figures.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayes_gmm import gibbs, laplace, nuts
from bayes_gmm.checks import check_choice, check_float, check_int
from bayes_gmm.diagnostics import to_datatree
from bayes_gmm.em import GMMParams
from bayes_gmm.priors import GMMPrior, check_covariance_type

METHODS = ("nuts", "gibbs", "laplace")
NUTS_INITS = nuts.INITS


class PosteriorDraws(NamedTuple):
    """Draws of one method before they become a DataTree."""

    draws: GMMParams  # leading axes (chain, draw)
    sample_stats: dict  # name -> (chain, draw) array
    attrs: dict  # facts about the run (time, settings)


def sample(
    key,
    x,
    prior: GMMPrior,
    map_params: GMMParams,
    *,
    covariance_type: str = "full",
    method: str = "nuts",
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 1000,
    thinning: int = 1,
    init_jitter: float = 0.0,
    init: str = "map",
    progress_bar: bool = False,
    map_info=None,
    feature_names=None,
    log_likelihood: bool = True,
):
    """Sample the posterior of the mixture and return it as a DataTree.

    Parameters
    ----------
    key : jax.Array
    x : array of shape (n_samples, n_features)
        The data (already checked, e.g. by the estimator).
    prior : GMMPrior
    map_params : GMMParams
        The MAP estimate: where every chain starts, and the pivot of label alignment.
    covariance_type : {"full", "tied", "diag", "spherical"}
    method : {"nuts", "gibbs", "laplace"}, default "nuts"
    num_chains, num_warmup, num_samples, thinning : int
        Chains, warm-up steps per chain (unused by Laplace), kept draws per chain, and the
        steps per kept draw.
    init_jitter : float, default 0
        Scatter the chains' starts around the MAP (see :func:`bayes_gmm.gibbs.jitter_start`).
    init : {"map", "default"}, default "map"
        NUTS only: start at the MAP, or at NumPyro's default random initialisation.
    progress_bar : bool, default False
        A progress bar over NUTS's transitions (tqdm, as NumPyro's MCMC shows).
    map_info : EMInfo or dict, optional
        Facts about the MAP fit, stored in the tree's ``map`` group.
    feature_names : sequence of str, optional
    log_likelihood : bool, default True
        Store the pointwise log likelihood (what LOO needs; C x S x N values).

    Returns
    -------
    xarray.DataTree
    """
    result = draw(
        key, x, prior, map_params, covariance_type=covariance_type, method=method,
        num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples,
        thinning=thinning, init_jitter=init_jitter, init=init, progress_bar=progress_bar,
    )
    return to_datatree(
        result.draws,
        x=x,
        prior=prior,
        covariance_type=covariance_type,
        method=method,
        map_params=map_params,
        map_info=map_info,
        sample_stats=result.sample_stats,
        feature_names=feature_names,
        attrs=result.attrs,
        log_likelihood=log_likelihood,
    )


def draw(
    key,
    x,
    prior: GMMPrior,
    map_params: GMMParams,
    *,
    covariance_type: str = "full",
    method: str = "nuts",
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 1000,
    thinning: int = 1,
    init_jitter: float = 0.0,
    init: str = "map",
    progress_bar: bool = False,
) -> PosteriorDraws:
    """The draws of :func:`sample`, without building the DataTree."""
    check_covariance_type(covariance_type)
    check_choice(method, "method", METHODS)
    check_choice(init, "init", NUTS_INITS)
    settings = {
        "num_chains": check_int(num_chains, "num_chains", 1),
        "num_warmup": check_int(num_warmup, "num_warmup", 0),
        "num_samples": check_int(num_samples, "num_samples", 1),
        "thinning": check_int(thinning, "thinning", 1),
    }
    init_jitter = check_float(init_jitter, "init_jitter", 0.0)
    # Converted in NumPy and put on the device: an eager jnp.asarray compiles a small
    # program per shape and dtype.
    x = jax.device_put(_as_float(x))
    prior = GMMPrior(*(jax.device_put(np.asarray(a, x.dtype)) for a in prior))
    map_params = GMMParams(*(jax.device_put(np.asarray(a, x.dtype)) for a in map_params))

    start = time.perf_counter()
    extra = {}
    if method == "nuts":
        draws, stats = _nuts(key, x, prior, map_params, covariance_type, init, init_jitter,
                             progress_bar, **settings)
    elif method == "gibbs":
        draws, info = gibbs.sample(key, x, prior, map_params, covariance_type=covariance_type,
                                   init_jitter=init_jitter, **settings)
        stats = {"occupied": info.occupied}
    else:
        draws, extra = laplace.sample(key, x, prior, map_params,
                                      covariance_type=covariance_type,
                                      num_chains=settings["num_chains"],
                                      num_samples=settings["num_samples"])
        stats = {}
    draws = jax.device_get(jax.block_until_ready(draws))
    seconds = time.perf_counter() - start
    attrs = {"sampling_time": seconds, "init": init if method == "nuts" else "map",
             "init_jitter": init_jitter, **settings, **extra}
    return PosteriorDraws(draws, jax.device_get(stats), attrs)


def _nuts(key, x, prior, map_params, covariance_type, init, init_jitter, progress_bar,
          **settings):
    return nuts.sample(key, x, prior, map_params, covariance_type, init=init,
                       init_jitter=init_jitter, progress_bar=progress_bar, **settings)


def _as_float(x):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return x.astype(jnp.result_type(float))
    return x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)


__all__ = ["METHODS", "PosteriorDraws", "draw", "sample"]
