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
  the MAP find it, ``jax.hessian`` gives the curvature there, and independent draws are
  mapped back to the natural parameters. This is the Laplace approximation whose
  draws approximate the posterior of theta; a Gaussian at the MAP itself with the
  curvature of the density of theta would not be a density of the unconstrained
  variables at all.

Every method returns its draws in the same layout, so MAP, Laplace and full posterior
are compared by the same tables and figures.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax import lax
from jax.flatten_util import ravel_pytree
from numpyro.infer import MCMC, NUTS, init_to_uniform, init_to_value
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

from bayes_gmm import gibbs, padding, program_store
from bayes_gmm.checks import check_choice, check_float, check_int
from bayes_gmm.diagnostics import to_datatree
from bayes_gmm.em import GMMParams
from bayes_gmm.model import gmm_model, init_values
from bayes_gmm.priors import GMMPrior, check_covariance_type

METHODS = ("nuts", "gibbs", "laplace")
NUTS_INITS = ("map", "default")

# Newton's method for the Laplace centre: it starts O(1/N) from the mode, so a few steps
# reach it; the step norm below which it stops (in unconstrained units).
NEWTON_STEPS = 25
NEWTON_TOL = 1e-8


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
        Show NumPyro's progress bar (NUTS).
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
        draws, extra = _laplace(key, x, prior, map_params, covariance_type,
                                settings["num_chains"], settings["num_samples"])
        stats = {}
    draws = jax.device_get(jax.block_until_ready(draws))
    seconds = time.perf_counter() - start
    attrs = {"sampling_time": seconds, "init": init if method == "nuts" else "map",
             "init_jitter": init_jitter, **settings, **extra}
    return PosteriorDraws(draws, jax.device_get(stats), attrs)


def _nuts(key, x, prior, map_params, covariance_type, init, init_jitter, progress_bar, *,
          num_chains, num_warmup, num_samples, thinning):
    model_args = (x, prior, covariance_type)
    strategy = init_to_value(values=init_values(map_params)) if init == "map" else init_to_uniform
    # One device: chains as a batch (vectorised). Enough devices: one chain per device.
    parallel = num_chains > 1 and jax.local_device_count() >= num_chains
    mcmc = MCMC(
        NUTS(gmm_model, init_strategy=strategy),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        thinning=thinning,
        chain_method="parallel" if parallel else "vectorized",
        progress_bar=progress_bar,
    )
    start_key, run_key = jax.random.split(key)
    init_params = None
    if init == "map" and init_jitter > 0:
        starts = jax.vmap(lambda k: gibbs.jitter_start(k, map_params, init_jitter,
                                                       covariance_type))(
            jax.random.split(start_key, num_chains)
        )
        init_params = jax.vmap(
            lambda p: unconstrain_fn(gmm_model, model_args, {}, init_values(p))
        )(starts)
    try:
        mcmc.run(run_key, *model_args, extra_fields=("diverging", "num_steps", "accept_prob"),
                 init_params=init_params)
    except RuntimeError as err:  # NumPyro: "Cannot find valid initial parameters", ...
        raise FloatingPointError(
            f"NUTS could not start: {err} Start at the MAP (init='map', the default) with "
            "a smaller init_jitter, or use method='gibbs'."
        ) from None
    samples = mcmc.get_samples(group_by_chain=True)
    draws = GMMParams(samples["weights"], samples["means"], samples["covariances"])
    return draws, mcmc.get_extra_fields(group_by_chain=True)


def _as_float(x):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return x.astype(jnp.result_type(float))
    return x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)


def _laplace(key, x, prior, map_params, covariance_type, num_chains, num_samples):
    """The Laplace approximation's draws, by two compiled programs that every call of the
    same shapes reuses (and a second process finds on disk, :mod:`bayes_gmm.program_store`):
    the centre and the Cholesky factor of the Hessian there, then the draws. Small data
    are padded to a row bucket (:mod:`bayes_gmm.padding`), the padded rows masked out of
    the likelihood, so that one program serves every N of the bucket."""
    n_samples, n_features = x.shape
    rows, _ = padding.padded_shape(n_samples, map_params.weights.shape[0], n_features)
    x_padded, row_mask = padding.pad_rows(np.asarray(x), rows)
    flat, cholesky, steps, shift, finite = _laplace_centre(
        x_padded, row_mask, prior, map_params, covariance_type
    )
    if not bool(finite):
        raise FloatingPointError(
            "The Laplace approximation failed: the negative Hessian of the log posterior "
            "in the unconstrained parametrisation is not positive definite near the MAP "
            "(a flat or multimodal direction, e.g. an almost empty component). Use "
            "method='nuts' or method='gibbs'."
        )
    key_data, impl = _key_data(key)
    draws = _laplace_draws(key_data, flat, cholesky, x_padded, row_mask, prior, map_params,
                           covariance_type, num_chains, num_samples, impl)
    facts = {"laplace_newton_steps": int(steps), "laplace_centre_shift": float(shift)}
    return draws, facts


def _key_data(key):
    """A PRNG key as (uint32 data, the name of its implementation): plain arrays, which a
    stored program can take."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key), str(jax.random.key_impl(key))
    return key, None  # a raw uint32 key of the default implementation


def _masked_model(x, row_mask, prior, covariance_type):
    """:func:`gmm_model` with the likelihood of the rows where ``row_mask`` is 0 left out
    (padding); the prior's sites are not masked."""
    with _MaskData(mask=row_mask > 0):
        gmm_model(x, prior, covariance_type)


class _MaskData(numpyro.handlers.mask):
    """NumPyro's ``mask``, applied to the data site ``x`` alone."""

    def process_message(self, msg):
        if msg["name"] == "x":
            super().process_message(msg)


def _unconstrained(model_args, map_params):
    """The MAP in the unconstrained parametrisation, flat, and the function that unflattens."""
    return ravel_pytree(unconstrain_fn(_masked_model, model_args, {}, init_values(map_params)))


def _laplace_centre_core(x, row_mask, prior, map_params, covariance_type):
    """Newton's method from the MAP to the mode of the unconstrained density, and the
    Cholesky factor of the Hessian there.

    One evaluation of the gradient and the Hessian per pass of the loop, the last pass at
    the final point without a step, so the program holds a single copy of the Hessian
    (XLA's compile time grows with program size). Steps stop after :data:`NEWTON_STEPS`,
    at a step of max-norm below :data:`NEWTON_TOL`, or at a non-finite point.

    Returns the centre, the Cholesky factor, the number of steps, the distance from the
    MAP, and whether centre and factor are finite.
    """
    with numpyro.validation_enabled(False):  # see _laplace_draws_core
        return _laplace_centre_traced(x, row_mask, prior, map_params, covariance_type)


def _laplace_centre_traced(x, row_mask, prior, map_params, covariance_type):
    model_args = (x, row_mask, prior, covariance_type)
    flat_map, unravel = _unconstrained(model_args, map_params)

    def energy(f):
        return potential_energy(_masked_model, model_args, {}, unravel(f))

    def body(state):
        flat, _, steps, phase = state  # phase 0: stepping; 1: the final Hessian; 2: done
        hessian = jax.hessian(energy)(flat)
        step = jnp.linalg.solve(hessian, jax.grad(energy)(flat))
        moved = flat - step
        go_on = (jnp.all(jnp.isfinite(moved)) & ~(jnp.max(jnp.abs(step)) < NEWTON_TOL)
                 & (steps + 1 < NEWTON_STEPS))
        stepping = phase == 0
        return (jnp.where(stepping, moved, flat), hessian, steps + stepping.astype(steps.dtype),
                jnp.where(stepping, jnp.where(go_on, 0, 1), 2).astype(phase.dtype))

    size = flat_map.shape[0]
    state = (flat_map, jnp.zeros((size, size), flat_map.dtype), jnp.int32(0), jnp.int32(0))
    flat, hessian, steps, _ = lax.while_loop(lambda s: s[3] < 2, body, state)
    cholesky = jnp.linalg.cholesky(0.5 * (hessian + hessian.T))
    finite = jnp.all(jnp.isfinite(flat)) & jnp.all(jnp.isfinite(cholesky))
    return flat, cholesky, steps, jnp.linalg.norm(flat - flat_map), finite


def _laplace_draws_core(key_data, flat, cholesky, x, row_mask, prior, map_params,
                        covariance_type, num_chains, num_samples, impl):
    """Independent draws ``u = mode + L^{-T} z`` (covariance (L L^T)^{-1} = H^{-1}),
    mapped back to the natural parameters.

    NumPyro's argument validation is off while tracing: on traced values it checks
    nothing, but it would still run (and compile) small eager programs on the constants
    of every distribution it builds.
    """
    with numpyro.validation_enabled(False):
        return _laplace_draws_traced(key_data, flat, cholesky, x, row_mask, prior,
                                     map_params, covariance_type, num_chains, num_samples,
                                     impl)


def _laplace_draws_traced(key_data, flat, cholesky, x, row_mask, prior, map_params,
                          covariance_type, num_chains, num_samples, impl):
    model_args = (x, row_mask, prior, covariance_type)
    _, unravel = _unconstrained(model_args, map_params)
    key = key_data if impl is None else jax.random.wrap_key_data(key_data, impl=impl)
    z = jax.random.normal(key, (num_chains, num_samples, flat.shape[0]), flat.dtype)
    flat_draws = flat + jax.scipy.linalg.solve_triangular(
        cholesky.T, z[..., None], lower=False
    )[..., 0]

    def to_params(u):
        values = constrain_fn(_masked_model, model_args, {}, unravel(u))
        return GMMParams(values["weights"], values["means"], values["covariances"])

    return jax.vmap(jax.vmap(to_params))(flat_draws)


# Jitted, and kept lowered on disk for the next process (bayes_gmm.program_store).
_laplace_centre = program_store.stored_jit(_laplace_centre_core, (4,))
_laplace_draws = program_store.stored_jit(_laplace_draws_core, (7, 8, 9, 10))


__all__ = ["METHODS", "PosteriorDraws", "draw", "sample"]
