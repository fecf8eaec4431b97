"""The conjugate blocked Gibbs sampler: the second sampler of the posterior that EM climbs.

The model of :mod:`bayes_gmm.priors` is conditionally conjugate: given the component
labels z, the weights, means and covariances have a closed-form posterior of the same
family as their prior. The sampler alternates two blocks (Diebolt and Robert, 1994):

1. ``z | theta``: one categorical draw per point from the responsibilities of
   :func:`bayes_gmm.e_step`;
2. ``theta | z``: the hard-assignment statistics (:func:`bayes_gmm.em.statistics` of the
   one-hot labels), then ``pi | z ~ Dirichlet(alpha + n)`` and, independently of pi, each
   covariance from its posterior with the mean integrated out, then each mean given its
   covariance (:mod:`bayes_gmm.conjugate` derives the formulas and draws from them).

Both blocks are exact draws from full conditionals, so there is nothing to tune and no
acceptance step. Its use beside NUTS (:mod:`bayes_gmm.model`) is as an independent second
sampler of the same density: two samplers agreeing is the strongest check of either.

Everything is pure JAX over NamedTuples, like the EM core: chains run side by side under
``vmap``, transitions (warmup, then thinned draws) follow each other in one ``lax.scan``
that writes every kept draw into its slot, and one jitted inner function holds all of it.
The chain state carries the responsibilities of the current theta, so that the E-step
that step 1 needs anyway also gives the log likelihood *of the recorded draw*: every
quantity in :class:`GibbsInfo` belongs to the theta recorded beside it (and the counts to
the labels that theta was drawn from). Labels are not stored; the sampler records the
label-invariant quantities that need no alignment (log likelihood, log posterior,
counts and occupied components).

One compiled program serves every K and every N of a row bucket on small data: the
points are padded to the bucket (row mask 0) and the components to the slots of
:mod:`bayes_gmm.padding` (concentration 0: weight 0, no label, no Dirichlet mass), and
the program is kept on disk for the next process (:mod:`bayes_gmm.program_store`). Each
slot and each point draws its random numbers from its own ``fold_in`` key, so the real
slots' draws do not depend on the padding: the padded run equals the unpadded one.
"""

from __future__ import annotations

import itertools
from functools import partial
from numbers import Integral
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bayes_gmm import padding, program_store
from bayes_gmm.conjugate import ConditionalPosterior, conditional_posterior, draw_parameters
from bayes_gmm.covariance import KINDS
from bayes_gmm.em import (
    GMMParams,
    _chunk_rows,
    _component_log_prob,
    _log_normaliser,
    _statistics_from_responsibilities,
    as_data,
    e_step,
    log_prior,
    statistics,
)
from bayes_gmm.priors import COVARIANCE_TYPES, GMMPrior
from bayes_gmm.sharding import device_chunks, resolve_mesh, rows_per_device, sum_over_devices


class GibbsInfo(NamedTuple):
    """Per-draw diagnostics; leading axes (num_chains, num_samples) from :func:`sample`,
    none from :func:`gibbs_step`. Each entry belongs to the draw recorded beside it."""

    log_likelihood: jax.Array  # (C, S) log p(x | theta) at the draw
    log_posterior: jax.Array  # (C, S) log p(x | theta) + log p(theta) at the draw
    occupied: jax.Array  # (C, S) int32, components with n_k > 0 in the labels theta came from
    counts: jax.Array  # (C, S, K) int32, n_k of the labels the draw was drawn from


program_store.register_pytree(GibbsInfo)  # an output of the stored program


class _ChainState(NamedTuple):
    params: GMMParams  # the current theta
    log_resp: jax.Array  # (N, K) log responsibilities under `params` (sharded: see _e_step)
    log_likelihood: jax.Array  # () log p(x | params)
    counts: jax.Array  # (K,) n_k of the labels `params` was drawn from


# --------------------------------------------------------------------------------------
# One transition


def _e_step(x, params, covariance_type, row_mask=None, mesh=None):
    """Log responsibilities and the log likelihood (of the rows where ``row_mask`` is 1).
    With a ``mesh``, ``x`` is the device-major layout of
    :func:`bayes_gmm.sharding.device_chunks` (with its row mask) and the responsibilities
    come in the same layout, (n_devices, n_chunks, K, C)."""
    if mesh is None:
        log_resp, log_density = e_step(x, params, covariance_type)
        if row_mask is not None:
            log_density = jnp.where(row_mask > 0, log_density, 0.0)
        return log_resp, jnp.sum(log_density)
    kind = KINDS[covariance_type]
    n_components, n_features = params.means.shape
    factor = kind.factor(params.covariances, n_components, n_features)
    whitening = kind.whitening(params.means, factor)
    log_norm = _log_normaliser(jnp.log(params.weights), factor.half_log_det, n_features)

    def one_chunk(points):
        log_prob = _component_log_prob(kind.whiten(points, whitening), log_norm)
        log_density = jax.nn.logsumexp(log_prob, axis=0)
        return log_prob - log_density, jnp.sum(points[n_features] * log_density)

    def one_device(chunks):
        log_resp, log_density = lax.map(one_chunk, chunks)
        return jnp.sum(log_density), log_resp

    log_likelihood, log_resp = sum_over_devices(one_device, mesh, x)
    return log_resp, log_likelihood


def _draw_labels(key, log_resp, axis, layout=None):
    """One categorical draw per point from its responsibilities (slots along ``axis``),
    by inversion: the first slot whose running sum of responsibilities exceeds ``u``
    times their total, ``u ~ U[0, 1)`` from the point's own key
    (:func:`bayes_gmm.padding.fold_in_keys` over the rows; ``layout`` lays the uniforms
    out like the points, as on devices).

    The running sums are added in slot order, exactly: a slot of responsibility zero (a
    dead or padded component) repeats its predecessor's sum and so is never drawn, and
    trailing zero slots change nothing (jnp.cumsum's parallel scan would round otherwise).
    """
    resp = jnp.moveaxis(jnp.exp(log_resp), axis, 0)
    n_rows = resp[0].size
    uniform = jax.vmap(lambda k: jax.random.uniform(k, (), resp.dtype))(
        padding.fold_in_keys(key, n_rows)
    )
    uniform = uniform.reshape(resp.shape[1:]) if layout is None else layout(uniform)
    cumulative = jnp.stack(list(itertools.accumulate(resp)))
    return jnp.sum(cumulative <= uniform * cumulative[-1], axis=0)


def _label_statistics(key, log_resp, x, covariance_type, row_mask=None, mesh=None):
    """z | theta, and the statistics of the labels drawn (of the rows where ``row_mask``
    is 1)."""
    if mesh is None:
        n_components = log_resp.shape[-1]
        labels = _draw_labels(key, log_resp, axis=1)
        one_hot = jax.nn.one_hot(labels, n_components, dtype=x.dtype)
        if row_mask is not None:
            one_hot = one_hot * row_mask[:, None]
        return statistics(x, one_hot, covariance_type)
    # Each row's uniform from its global row number, laid out like the points: the labels
    # (and the chains) are those of the one-device draw.
    n_devices, n_chunks, n_components, chunk = log_resp.shape

    def like_the_points(uniform):
        return device_chunks(uniform[:, None], mesh, chunk)[:, :, 0, :]

    labels = _draw_labels(key, log_resp, axis=2, layout=like_the_points)
    mask = x[:, :, -1:, :]
    one_hot = jnp.swapaxes(jax.nn.one_hot(labels, n_components, dtype=x.dtype), 2, 3) * mask
    return _statistics_from_responsibilities(x, one_hot, covariance_type, mesh)


def _start_state(x, params, covariance_type, row_mask=None, mesh=None):
    n_components = params.weights.shape[0]
    log_resp, log_likelihood = _e_step(x, params, covariance_type, row_mask, mesh)
    return _ChainState(params, log_resp, log_likelihood, jnp.zeros(n_components, x.dtype))


def _transition(key, state: _ChainState, x, prior, covariance_type, row_mask=None,
                mesh=None) -> _ChainState:
    """z | theta, then theta | z; then the E-step of the new theta, which both records its
    log likelihood and gives the responsibilities the next transition draws labels from."""
    label_key, theta_key = jax.random.split(key)
    stats = _label_statistics(label_key, state.log_resp, x, covariance_type, row_mask, mesh)
    params = draw_parameters(
        theta_key, conditional_posterior(stats, prior, covariance_type), covariance_type
    )
    log_resp, log_likelihood = _e_step(x, params, covariance_type, row_mask, mesh)
    return _ChainState(params, log_resp, log_likelihood, stats.counts)


def _record(state: _ChainState, prior, covariance_type) -> tuple[GMMParams, GibbsInfo]:
    counts = state.counts.astype(jnp.int32)
    info = GibbsInfo(
        log_likelihood=state.log_likelihood,
        log_posterior=state.log_likelihood + log_prior(state.params, prior, covariance_type),
        occupied=jnp.sum(counts > 0).astype(jnp.int32),
        counts=counts,
    )
    return state.params, info


def _centre(x, prior, params, row_mask=None):
    """Move to the frame centred on the data mean (the model is translation invariant):
    the E-step's whitening ``x L^{-T} - mu L^{-T}`` would otherwise lose the digits that
    an offset of the data from the origin takes, in float32 especially. Padded rows
    (``row_mask`` 0) stay at zero."""
    if row_mask is None:
        shift = jnp.mean(x, axis=0)
        x = x - shift
    else:
        shift = jnp.sum(x * row_mask[:, None], axis=0) / jnp.sum(row_mask)
        x = (x - shift) * row_mask[:, None]
    return x, prior._replace(mean=prior.mean - shift), params._replace(
        means=params.means - shift
    ), shift


def _as_dtype(tree, dtype, xp=jnp):
    return type(tree)(*(xp.asarray(a, dtype) for a in tree))


@partial(jax.jit, static_argnames=("covariance_type",))
def gibbs_step(key, x, params: GMMParams, prior: GMMPrior, covariance_type: str = "full"):
    """One Gibbs transition from ``params``: labels, then weights, covariances and means.

    Parameters
    ----------
    key : jax.Array
    x : Array of shape (n_samples, n_features)
    params : GMMParams
        The current theta.
    prior : GMMPrior
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    params : GMMParams
        The new theta, in the dtype of ``x``.
    step_info : GibbsInfo
        Of the new theta (no leading axes): its log likelihood and log posterior, and the
        counts of the labels it was drawn from. Costs a second E-step, which
        :func:`sample` shares with the next transition.
    """
    dtype = x.dtype
    x, prior, params, shift = _centre(x, _as_dtype(prior, dtype), _as_dtype(params, dtype))
    state = _transition(key, _start_state(x, params, covariance_type), x, prior, covariance_type)
    params, info = _record(state, prior, covariance_type)
    return params._replace(means=params.means + shift), info


# --------------------------------------------------------------------------------------
# Chains


def jitter_start(key, params: GMMParams, jitter, covariance_type: str = "full") -> GMMParams:
    r"""A start near ``params``, perturbed in unconstrained coordinates.

    - weights: logits ``log pi_k + jitter * eps_k``, renormalised (a zero weight stays
      zero; the first Dirichlet draw gives it mass again);
    - means: ``mu_kd + jitter * sd_kd * eps_kd``, ``sd_kd`` the component's standard
      deviation along feature d;
    - covariances: multiplied by ``exp(jitter * eps)``, one factor per matrix (full, tied)
      or per variance (diag, spherical), which keeps them positive definite.

    ``eps`` are independent standard normals; ``jitter = 0`` returns ``params`` (weights
    renormalised).

    Parameters
    ----------
    key : jax.Array
    params : GMMParams
    jitter : float or Array of shape ()
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    GMMParams
    """
    slot_key, shared_key = jax.random.split(key)
    weights, means, covariances = params
    n_components, n_features = means.shape
    dtype = means.dtype
    if covariance_type in ("full", "tied"):
        sd = jnp.sqrt(jnp.diagonal(covariances, axis1=-2, axis2=-1))
    else:
        sd = jnp.sqrt(covariances)
        sd = sd if covariance_type == "diag" else sd[:, None]
    # Per slot, from its own key (padding changes no real slot's start): one weight
    # logit, D means and its covariance factors; tied's one factor from its own key.
    n_factors = {"full": 1, "tied": 0, "diag": n_features, "spherical": 1}[covariance_type]
    eps = jax.vmap(lambda k: jax.random.normal(k, (1 + n_features + n_factors,), dtype))(
        padding.fold_in_keys(slot_key, n_components)
    )
    logits = jnp.log(weights) + jitter * eps[:, 0]
    means = means + jitter * sd * eps[:, 1 : 1 + n_features]
    if covariance_type == "tied":
        factor = jnp.exp(jitter * jax.random.normal(shared_key, (), dtype))
    else:
        factor = jnp.exp(jitter * eps[:, 1 + n_features :])
        full = covariance_type == "full"
        factor = factor.reshape(n_components, *((1, 1) if full else covariances.shape[1:]))
    return GMMParams(jax.nn.softmax(logits), means, covariances * factor)


def _check_static(x, prior, init_params, covariance_type, counts):
    """Checks of types and shapes only: free at trace time, nothing data-dependent."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {', '.join(map(repr, COVARIANCE_TYPES))}; "
            f"got {covariance_type!r}."
        )
    for name, value, smallest in counts:
        if isinstance(value, bool) or not isinstance(value, Integral) or value < smallest:
            raise ValueError(f"{name} must be an integer >= {smallest}; got {value!r}.")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n_samples, n_features); got shape {x.shape}.")
    n_features = x.shape[1]
    n_components = jnp.shape(prior.weight_concentration)[0]
    expected = {"full": (n_components, n_features, n_features),
                "tied": (n_features, n_features),
                "diag": (n_components, n_features),
                "spherical": (n_components,)}[covariance_type]
    got = tuple(jnp.shape(a) for a in init_params)
    if got != ((n_components,), (n_components, n_features), expected):
        raise ValueError(
            f"init_params do not match the data, the prior and covariance_type="
            f"{covariance_type!r}: expected weights, means and covariances of shapes "
            f"({n_components},), ({n_components}, {n_features}) and {expected}; got "
            f"{', '.join(map(str, got))}. Start from bayes_gmm.fit_map(...) with the same "
            "prior and covariance_type."
        )


def sample(
    key,
    x,
    prior: GMMPrior,
    init_params: GMMParams,
    *,
    covariance_type: str = "full",
    num_samples: int = 1000,
    num_warmup: int = 500,
    num_chains: int = 4,
    thinning: int = 1,
    init_jitter=0.0,
    mesh="auto",
) -> tuple[GMMParams, GibbsInfo]:
    """Posterior draws by conjugate blocked Gibbs sampling, several chains side by side.

    Each chain starts at ``init_params`` (normally the MAP of :func:`bayes_gmm.fit_map`),
    perturbed by :func:`jitter_start` when ``init_jitter > 0``, makes ``num_warmup``
    transitions that are discarded, then ``num_samples * thinning`` transitions of which
    every ``thinning``-th is kept. Pure and jitted: usable under ``jax.jit`` and
    ``jax.vmap``. Small data are padded (:mod:`bayes_gmm.padding`), so that a run with
    another K, another N of the row bucket, another ``num_samples`` (up to
    :func:`bayes_gmm.padding.draw_buffer`), ``num_warmup``, ``thinning`` or
    ``init_jitter``, and the same D, dtype and ``num_chains``, compiles nothing; the draws
    equal those without padding to rounding. Runs whose padding would cost more than a
    compilation
    (:func:`bayes_gmm.padding.padded_shape_for_passes`) are not padded.

    Parameters
    ----------
    key : jax.Array
        PRNG key; chain c uses ``jax.random.split(key, num_chains)[c]``.
    x : Array of shape (n_samples, n_features)
        Finite data; its floating dtype is the dtype of every result.
    prior : GMMPrior
        From :func:`bayes_gmm.default_prior`; K is ``prior.weight_concentration.shape[0]``.
    init_params : GMMParams
        The start, all three fields given, shapes of ``covariance_type``.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
    num_samples : int, default 1000
        Draws kept per chain.
    num_warmup : int, default 500
        Transitions discarded per chain before the first kept one.
    num_chains : int, default 4
    thinning : int, default 1
        Transitions per kept draw.
    init_jitter : float, default 0.0
        Scale of the per-chain perturbation of the start (:func:`jitter_start`); with 0
        every chain starts at ``init_params`` and the chains differ only by their keys.
    mesh : "auto", jax.sharding.Mesh or None, default "auto"
        Devices to split the points over (:mod:`bayes_gmm.sharding`): each draws the
        labels of its points and sums their statistics, and one all-reduce per transition
        adds them; theta is drawn on every device alike. "auto" uses every device when
        there are several, None one device. The draws equal the one-device draws to
        rounding (the labels are drawn from the same random numbers).

    Returns
    -------
    draws : GMMParams
        Leading axes (num_chains, num_samples): weights (C, S, K), means (C, S, K, D),
        covariances (C, S) + the shape of the covariance type.
    info : GibbsInfo
        Of every kept draw.

    References
    ----------
    Diebolt, J. and Robert, C. P. (1994). Estimation of finite mixture distributions
    through Bayesian sampling. Journal of the Royal Statistical Society B 56, 363-375.
    """
    traced = padding.is_traced(key, x, prior, init_params, init_jitter)
    x = as_data(x)
    settings = (("num_samples", num_samples, 1), ("num_warmup", num_warmup, 0),
                ("num_chains", num_chains, 1), ("thinning", thinning, 1))
    _check_static(x, prior, init_params, covariance_type, settings)
    mesh = resolve_mesh(mesh)
    # Every array in x's dtype, converted in NumPy when concrete: jit keys its cache on
    # dtypes and weak types, and an eager jnp.asarray compiles a program per shape.
    xp = jnp if traced else np
    prior, init_params = (_as_dtype(tree, x.dtype, xp) for tree in (prior, init_params))
    n_samples, n_features = x.shape
    n_components = prior.weight_concentration.shape[0]
    num_samples, num_warmup, num_chains, thinning = (int(value) for _, value, _ in settings)
    rows, slots, buffer = n_samples, n_components, num_samples
    if not traced and mesh is None:  # as em.fit_map: one program for many K, N and runs
        passes = num_chains * (num_warmup + num_samples * thinning)
        rows, slots = padding.padded_shape_for_passes(n_samples, n_components, n_features,
                                                      passes)
        if (rows, slots) != (n_samples, n_components):
            buffer = padding.draw_buffer(num_samples)
    key_data, impl = program_store.key_data(key)
    draws, info = _sample(
        key_data, *padding.pad_rows(x, rows), padding.pad_prior(prior, slots),
        padding.pad_params(init_params, slots, covariance_type),
        xp.asarray(init_jitter, x.dtype), *(np.int32(n) for n in (num_samples, num_warmup,
                                                                  thinning)),
        covariance_type, buffer, num_chains, impl, mesh,
    )
    draws, info = (jax.tree.map(lambda a: padding.unpad_axis(a, num_samples, 1), tree)
                   for tree in (draws, info))
    draws = padding.unpad_params(draws, n_components, covariance_type, axis=2)
    return draws, info._replace(counts=padding.unpad_axis(info.counts, n_components, 2))


def _sample_core(
    key_data, x, row_mask, prior, init_params, init_jitter, num_samples, num_warmup,
    thinning, covariance_type, buffer, num_chains, impl, mesh,
):
    """:func:`sample` on rows of which ``row_mask`` marks the points, in component slots
    of which those of concentration zero are padding (:mod:`bayes_gmm.padding`), keeping
    the draws in a buffer of ``buffer >= num_samples`` per chain (the rest stays zero).
    Transition t draws from ``fold_in(chain key, t)``."""
    key = program_store.wrap_key(key_data, impl)
    x, prior, init_params, shift = _centre(x, prior, init_params, row_mask)
    if mesh is not None:
        n_samples, n_features = x.shape
        n_components = init_params.weights.shape[0]
        chunk = _chunk_rows(rows_per_device(n_samples, mesh), n_components, n_features, None)
        x = device_chunks(jnp.concatenate([x, row_mask[:, None]], axis=1), mesh, chunk)

    total = num_warmup + num_samples * thinning

    def transition(t, carry):
        state, kept, loop_key = carry
        key = jax.random.fold_in(loop_key, t)
        state = _transition(key, state, x, prior, covariance_type, row_mask, mesh)
        # One loop over every transition, writing each kept draw into its slot, so that
        # the transition is compiled once rather than once per loop (warmup, thinning).
        offset = t - num_warmup + 1
        keep = (offset > 0) & (offset % thinning == 0)
        slot = jnp.clip(offset // thinning - 1, 0, buffer - 1)
        record = _record(state, prior, covariance_type)
        kept = jax.tree.map(
            lambda stored, new: stored.at[slot].set(jnp.where(keep, new, stored[slot])),
            kept, record,
        )
        return state, kept, loop_key

    def chain(key):
        start_key, loop_key = jax.random.split(key)
        start = jitter_start(start_key, init_params, init_jitter, covariance_type)
        state = _start_state(x, start, covariance_type, row_mask, mesh)
        record = jax.eval_shape(lambda: _record(state, prior, covariance_type))
        kept = jax.tree.map(lambda a: jnp.zeros((buffer, *a.shape), a.dtype), record)
        _, kept, _ = lax.fori_loop(0, total, transition, (state, kept, loop_key))
        return kept

    draws, info = jax.vmap(chain)(jax.random.split(key, num_chains))
    return draws._replace(means=draws.means + shift), info


# Jitted, and kept lowered on disk for the next process (bayes_gmm.program_store).
_sample = program_store.stored_jit(_sample_core, static_argnums=(9, 10, 11, 12, 13))


__all__ = [
    "ConditionalPosterior",  # theta | z, from bayes_gmm.conjugate
    "GibbsInfo",
    "conditional_posterior",
    "draw_parameters",
    "gibbs_step",
    "jitter_start",
    "sample",
]
