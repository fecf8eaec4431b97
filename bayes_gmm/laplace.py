"""The Laplace approximation of the posterior, in two compiled programs per shape.

What it approximates is said in :mod:`bayes_gmm.posterior`: a Gaussian in NumPyro's
unconstrained parametrisation of :func:`bayes_gmm.model.gmm_model`, centred at the mode
of the unconstrained density (Newton's method from the MAP) with the curvature there.
This module computes it with two programs, the centre with the Cholesky factor of the
Hessian, then the draws, kept on disk for the next process
(:mod:`bayes_gmm.program_store`).

On small data compiling them takes far longer than running them, so a small problem is
padded (:mod:`bayes_gmm.padding`): rows to a bucket, masked out of the likelihood, and
component slots to a power of two, marked by a concentration of zero. One pair of
programs then serves every N of a bucket and every K up to the slot count, and the
padding changes nothing, to rounding (tests/test_laplace_padding.py):

- The weights are NumPyro's stick-breaking transform of K - 1 coordinates, its shifts
  ``log(K - 1 - j)`` taken with K counted from the concentrations (a traced value). The
  stick is used up at the last real slot, so every padded weight is exactly 0, and the
  Dirichlet density and the Jacobian run over the real slots alone.
- The means and covariances of padded slots are masked out of the prior (their
  Jacobians too), and their components out of the mixture (a logit of exactly -inf): the
  density does not depend on them at all.
- Each padded coordinate gets a standard normal term instead. It starts at 0 (the
  padded MAP: mean 0, unit covariance), where its gradient is 0 and its block of the
  Hessian the identity, uncoupled from the real block: Newton's method does not move
  it, the Cholesky factor is block diagonal and its real block is the unpadded factor.
- The standard normal draws are made slot by slot (:func:`standard_normal`), so the
  real coordinates get the same numbers whatever the slot count; the draws of padded
  slots are dropped with the slots.

The padded components are still evaluated, to no effect, so every column of the Hessian
costs slots / K times as much; its padded columns are known and skipped. Where that
would cost more than a compilation saves (:data:`SLOT_PADDING_WORK`), the slots are not
padded (:func:`padded_shape`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.scipy.special import expit, gammaln
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform, biject_to
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn

from bayes_gmm import padding, program_store
from bayes_gmm.covariance import KINDS
from bayes_gmm.em import GMMParams
from bayes_gmm.model import gmm_model, init_values
from bayes_gmm.priors import GMMPrior

# Newton's method for the centre: it starts O(1/N) from the mode, so a few steps reach
# it; the step norm below which it stops (in unconstrained units).
NEWTON_STEPS = 25
NEWTON_TOL = 1e-8
# Columns of the Hessian computed together (one vmap); the columns of padding are skipped.
HESSIAN_BLOCK = 8
# Padded component slots make every Hessian column cost slots / K times as much (the
# padded components are evaluated, to no effect). On small data that is milliseconds
# against the seconds of compiling for each new K; beyond this much work per Newton
# step (rows x slots x real coordinates x D) the slots are not padded, the rows still
# are. Measured on 2 cores, float32: 1000 x 2, K = 3 (560 000): a first call 5 s instead
# of 4, a later K 0.1 s instead of 4; 500 x 3, K = 4 (960 000): a first call 9 s
# instead of 4.5, each call 1 s instead of 0.15.
SLOT_PADDING_WORK = 750_000


class Centre(NamedTuple):
    """The centre of the approximation and its curvature, in the padded coordinates."""

    flat: jax.Array  # (P,) the mode of the unconstrained density, flattened
    cholesky: jax.Array  # (P, P) lower Cholesky factor of the Hessian of -log density there
    steps: jax.Array  # () int32, Newton steps from the MAP
    shift: jax.Array  # () distance from the MAP to the mode (unconstrained units)
    finite: jax.Array  # () bool, mode and factor are finite
    real: jax.Array  # (P,) bool, the coordinates of real components (not padding)


program_store.register_pytree(Centre)


def sample(key, x, prior: GMMPrior, map_params: GMMParams, *, covariance_type: str,
           num_chains: int, num_samples: int):
    """Independent draws of the Laplace approximation.

    Parameters
    ----------
    key : jax.Array
    x : array of shape (n_samples, n_features)
    prior : GMMPrior
    map_params : GMMParams
        The MAP, K components: where Newton's method starts.
    covariance_type : {"full", "tied", "diag", "spherical"}
    num_chains, num_samples : int
        The draws come in the layout of a sampler's: (chain, draw) leading axes.

    Returns
    -------
    draws : GMMParams
        Leading axes (num_chains, num_samples), then K components.
    facts : dict
        ``laplace_newton_steps`` and ``laplace_centre_shift`` (the distance from the MAP
        to the centre, in unconstrained units).

    Raises
    ------
    FloatingPointError
        Where the Hessian at the centre is not positive definite.
    """
    (n_samples, n_features), n_components = x.shape, map_params.weights.shape[0]
    rows, slots = padded_shape(n_samples, n_components, n_features, covariance_type)
    x_padded, row_mask = padding.pad_rows(np.asarray(x), rows)
    prior = padding.pad_prior(GMMPrior(*(np.asarray(a) for a in prior)), slots)
    start = padding.pad_params(GMMParams(*(np.asarray(a) for a in map_params)), slots,
                               covariance_type)
    found = centre(x_padded, row_mask, prior, start, covariance_type)
    if not bool(found.finite):
        raise FloatingPointError(
            "The Laplace approximation failed: the negative Hessian of the log posterior "
            "in the unconstrained parametrisation is not positive definite near the MAP "
            "(a flat or multimodal direction, e.g. an almost empty component). Use "
            "method='nuts' or method='gibbs'."
        )
    key_data, impl = _key_data(key)
    padded = draws(key_data, found.flat, found.cholesky, x_padded, row_mask, prior, start,
                   covariance_type, num_chains, num_samples, impl)
    facts = {"laplace_newton_steps": int(found.steps),
             "laplace_centre_shift": float(found.shift)}
    return padding.unpad_params(padded, n_components, covariance_type, axis=2), facts


def padded_shape(n_samples: int, n_components: int, n_features: int,
                 covariance_type: str) -> tuple[int, int]:
    """(rows, slots) that the approximation of a problem is computed in: those of
    :func:`bayes_gmm.padding.padded_shape`, but K slots where padding them would cost
    more than :data:`SLOT_PADDING_WORK`."""
    rows, slots = padding.padded_shape(n_samples, n_components, n_features)
    coordinates = (n_components - 1 + n_components * n_features
                   + KINDS[covariance_type].n_parameters(n_components, n_features))
    if rows * slots * coordinates * n_features > SLOT_PADDING_WORK:
        slots = n_components
    return rows, slots


def _key_data(key):
    """A PRNG key as (uint32 data, the name of its implementation): plain arrays, which a
    stored program can take."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key), str(jax.random.key_impl(key))
    return key, None  # a raw uint32 key of the default implementation


def padded_model(x, row_mask, prior: GMMPrior, covariance_type: str):
    """:func:`bayes_gmm.model.gmm_model` with the rows where ``row_mask`` is 0 and the
    component slots of concentration 0 left out of the density (padding)."""
    with _Padding(row_mask > 0, prior.weight_concentration > 0):
        gmm_model(x, prior, covariance_type)


class _Padding(numpyro.primitives.Messenger):
    """Takes the padding out of :func:`gmm_model`'s sites, which it knows by name: the
    weights, the data ``x``, and the sites of the plate ``component``."""

    def __init__(self, row_mask, slot_mask):
        super().__init__()
        self.row_mask, self.slot_mask = row_mask, slot_mask

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        if msg["name"] == "weights":
            msg["fn"] = _SlotDirichlet(msg["fn"].concentration)
        elif msg["name"] == "x":
            msg["fn"] = _real_components(msg["fn"], self.slot_mask).mask(self.row_mask)
        elif any(frame.name == "component" for frame in msg["cond_indep_stack"]):
            # The means and covariances of padded slots, and the Jacobians of their
            # transforms (NumPyro's factor sites, issued inside the same plate).
            msg["fn"] = msg["fn"].mask(self.slot_mask)


def _real_components(mixture, slot_mask):
    """The data's mixture with the components of padded slots left out exactly: their
    weight is 0, but NumPyro clamps a probability at the smallest normal number, and a
    logit of log(tiny) would still give them a (tiny) share of the points."""
    batch_shape = mixture.batch_shape
    while isinstance(mixture, dist.ExpandedDistribution):  # the plate "data" expands it
        mixture = mixture.base_dist
    logits = jnp.where(slot_mask, mixture.mixing_distribution.logits, -jnp.inf)
    return dist.MixtureSameFamily(dist.Categorical(logits=logits),
                                  mixture.component_distribution).expand(batch_shape)


class _SlotSimplex(constraints.Constraint):
    """The simplex of the real slots: padded slots (``real`` False) hold exactly 0."""

    event_dim = 1

    def __init__(self, real):
        self.real = real

    def __call__(self, x):
        return constraints.simplex(x) & jnp.all(self.real | (x == 0), axis=-1)

    def feasible_like(self, prototype):
        uniform = self.real / jnp.sum(self.real)
        return jnp.broadcast_to(uniform, jnp.shape(prototype)).astype(prototype.dtype)

    def tree_flatten(self):
        return (self.real,), (("real",), {})


class _SlotStickBreaking(Transform):
    """NumPyro's ``StickBreakingTransform`` of the first K - 1 coordinates, K the number
    of real slots; the other coordinates are ignored and the padded weights are 0."""

    domain = constraints.real_vector

    def __init__(self, real):
        self.real = real  # (S,) bool, True for the first K slots

    @property
    def codomain(self):
        return _SlotSimplex(self.real)

    def _shift(self, n_coordinates, dtype):
        """Which coordinates are real (the first K - 1), and NumPyro's shift
        ``log(K - 1 - j)`` that maps 0 to equal weights, with K a traced count."""
        k = jnp.sum(self.real)
        j = jnp.arange(n_coordinates)
        coordinate = j < k - 1
        return coordinate, jnp.log(jnp.where(coordinate, k - 1 - j, 1)).astype(dtype)

    def __call__(self, x):
        coordinate, shift = self._shift(x.shape[-1], x.dtype)
        tiny, eps = jnp.finfo(x.dtype).tiny, jnp.finfo(x.dtype).eps
        # z_j: the fraction of the rest of the stick that slot j breaks off, clipped as
        # NumPyro clips it; the last real slot (K - 1) takes all the rest, and the
        # padded slots get exactly 0.
        z = jnp.clip(expit(x - shift), tiny, 1.0 - eps)
        log_rest = _prefix_sums(jnp.where(coordinate, jnp.log1p(-z), 0.0))
        ones = jnp.ones(z.shape[:-1] + (1,), z.dtype)  # z may be empty (K = 1)
        fraction = jnp.concatenate([jnp.where(coordinate, z, 1.0), ones], -1)
        rest = jnp.exp(jnp.concatenate([jnp.zeros_like(ones), log_rest], -1))
        return jnp.where(self.real, fraction * rest, 0.0)

    def _inverse(self, y):
        coordinate, shift = self._shift(y.shape[-1] - 1, y.dtype)
        rest = jnp.clip(1 - _prefix_sums(y[..., :-1]), jnp.finfo(y.dtype).tiny)
        x = jnp.log(jnp.where(coordinate, y[..., :-1] / rest, 1.0)) + shift
        return jnp.where(coordinate, x, 0.0)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        # NumPyro's sum_j log y_j + log sigmoid(x_j) - x_j (x shifted), over the real
        # coordinates; the padded ones move nothing.
        coordinate, shift = self._shift(x.shape[-1], x.dtype)
        x = x - shift
        y = jnp.where(coordinate, y[..., :-1], 1.0)
        terms = jnp.log(y) + (jax.nn.log_sigmoid(x) - x)
        return jnp.sum(jnp.where(coordinate, terms, 0.0), axis=-1)

    def forward_shape(self, shape):
        return shape[:-1] + (shape[-1] + 1,)

    def inverse_shape(self, shape):
        return shape[:-1] + (shape[-1] - 1,)

    def tree_flatten(self):
        return (self.real,), (("real",), {})


def _prefix_sums(v):
    """Sums of the first 1, 2, ... entries along the last axis, as a product with a
    triangular matrix: ``jnp.cumsum`` and ``jnp.cumprod`` lower to an associative scan on
    CPU, and its derivatives of derivatives (the Hessian) made the program take seconds
    longer to compile."""
    n = v.shape[-1]
    upper = jnp.arange(n)[:, None] <= jnp.arange(n)[None, :]
    return v @ upper.astype(v.dtype)


biject_to.register(_SlotSimplex, lambda constraint: _SlotStickBreaking(constraint.real))


class _SlotDirichlet(dist.Distribution):
    """``Dirichlet(alpha)`` over the slots of positive concentration; the padded slots
    (concentration 0) have weight exactly 0 and add nothing to the density."""

    arg_constraints = {"concentration": constraints.independent(constraints.nonnegative, 1)}

    def __init__(self, concentration):
        self.concentration = concentration
        super().__init__(batch_shape=(), event_shape=jnp.shape(concentration)[-1:])

    @property
    def support(self):
        return _SlotSimplex(self.concentration > 0)

    def log_prob(self, value):
        real = self.concentration > 0
        alpha = jnp.where(real, self.concentration, 1.0)  # padded: any finite stand-in
        # One call of gammaln (each compiles to some twenty kernels in float32).
        total = jnp.sum(self.concentration, axis=-1, keepdims=True)
        log_gammas = gammaln(jnp.concatenate([alpha, total], axis=-1))
        normaliser = (jnp.sum(jnp.where(real, log_gammas[..., :-1], 0.0), axis=-1)
                      - log_gammas[..., -1])
        terms = jnp.log(jnp.where(real, value, 1.0)) * (alpha - 1.0)
        return jnp.sum(jnp.where(real, terms, 0.0), axis=-1) - normaliser


def _unconstrained(model_args, map_params):
    """The MAP in the unconstrained parametrisation (a dict of sites), flat, the function
    that unflattens, and the flat mask of the real coordinates."""
    values = unconstrain_fn(padded_model, model_args, {}, init_values(map_params))
    flat, unravel = ravel_pytree(values)
    real = ravel_pytree(_real_coordinates(values, model_args[2], model_args[3]))[0]
    return values, flat, unravel, real


def _real_coordinates(values, prior, covariance_type):
    """For each site, which unconstrained coordinates belong to real components: the
    first K - 1 weight coordinates, the first K slots of the others (tied: all)."""
    slot_mask = prior.weight_concentration > 0
    masks = {}
    for name, value in values.items():
        if name == "weights":
            masks[name] = jnp.arange(value.shape[0]) < jnp.sum(slot_mask) - 1
        elif name == "covariances" and covariance_type == "tied":
            masks[name] = jnp.ones(value.shape, bool)
        else:
            slots = slot_mask.reshape(slot_mask.shape + (1,) * (value.ndim - 1))
            masks[name] = jnp.broadcast_to(slots, value.shape)
    return masks


def standard_normal(key, values: dict, covariance_type: str, num_chains: int,
                    num_samples: int):
    """Standard normal draws for the flattened unconstrained parameters ``values`` (a dict
    of sites), shape (num_chains, num_samples, P).

    Slot by slot: slot k's coordinates of every site (weights: coordinate k) are one row
    of normals drawn with the key ``fold_in(key, k + 1)``, the coordinates that belong to
    no slot (a tied covariance) the row of ``fold_in(key, 0)``. A coordinate's draws thus
    do not depend on the number of slots, and a padded problem draws for its real
    coordinates exactly what the unpadded one draws.
    """
    shared = {"covariances"} if covariance_type == "tied" else set()
    widths = {name: int(np.prod(value.shape[1:])) for name, value in values.items()
              if name not in shared}  # per slot
    width = max([sum(widths.values())] + [values[name].size for name in shared])
    dtype = values["means"].dtype
    n_rows = 1 + values["means"].shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_rows))
    rows = jax.vmap(lambda k: jax.random.normal(k, (num_chains, num_samples, width), dtype))(
        keys
    )  # (slots + 1, chains, draws, width)
    draws, offset = {}, 0
    for name in sorted(widths):
        value = values[name]
        part = rows[1:1 + value.shape[0], ..., offset:offset + widths[name]]
        draws[name] = jnp.moveaxis(part, 0, 2).reshape(rows.shape[1:3] + value.shape)
        offset += widths[name]
    for name in shared:
        draws[name] = rows[0, ..., :values[name].size].reshape(rows.shape[1:3]
                                                               + values[name].shape)
    return jax.vmap(jax.vmap(lambda tree: ravel_pytree(tree)[0]))(draws)


def newton(energy, start, hessian=None):
    """Newton's method on ``energy`` from ``start``; the point, the Hessian there, and the
    number of steps. ``hessian`` computes the Hessian at a point (default
    ``jax.hessian(energy)``).

    One evaluation of the gradient and the Hessian per pass of the loop, the last pass at
    the final point without a step, so the program holds a single copy of the Hessian
    (XLA's compile time grows with program size). Steps stop after :data:`NEWTON_STEPS`,
    at a step of max-norm below :data:`NEWTON_TOL`, or at a non-finite point.
    """
    hessian_at = jax.hessian(energy) if hessian is None else hessian

    def body(state):
        flat, _, steps, phase = state  # phase 0: stepping; 1: the final Hessian; 2: done
        hessian = hessian_at(flat)
        step = jnp.linalg.solve(hessian, jax.grad(energy)(flat))
        moved = flat - step
        go_on = (jnp.all(jnp.isfinite(moved)) & ~(jnp.max(jnp.abs(step)) < NEWTON_TOL)
                 & (steps + 1 < NEWTON_STEPS))
        stepping = phase == 0
        return (jnp.where(stepping, moved, flat), hessian, steps + stepping.astype(steps.dtype),
                jnp.where(stepping, jnp.where(go_on, 0, 1), 2).astype(phase.dtype))

    size = start.shape[0]
    state = (start, jnp.zeros((size, size), start.dtype), jnp.int32(0), jnp.int32(0))
    flat, hessian, steps, _ = lax.while_loop(lambda s: s[3] < 2, body, state)
    return flat, hessian, steps


def _hessian(energy, flat, real):
    """``jax.hessian(energy)(flat)`` without computing the columns of padded coordinates:
    they enter ``energy`` only by a standard normal term, so theirs are the identity's.
    The real columns go :data:`HESSIAN_BLOCK` at a time (a loop of as many passes as K
    needs), so the work follows K rather than the slot count."""
    size = flat.shape[0]
    block = min(HESSIAN_BLOCK, size)
    order = jnp.argsort(~real, stable=True)  # the real coordinates first
    gradient = jax.grad(energy)

    def columns(i, hessian):
        # The last block's start is clamped to fit: it may redo a few columns.
        index = lax.dynamic_slice(order, (i * block,), (block,))
        basis = jax.nn.one_hot(index, size, dtype=flat.dtype)
        _, found = jax.vmap(lambda v: jax.jvp(gradient, (flat,), (v,)))(basis)
        return hessian.at[:, index].set(found.T)

    n_blocks = (jnp.sum(real) + block - 1) // block
    return lax.fori_loop(0, n_blocks, columns, jnp.diag((~real).astype(flat.dtype)))


def centre_core(x, row_mask, prior: GMMPrior, map_params: GMMParams,
                covariance_type: str) -> Centre:
    """Newton's method from the MAP to the mode of the unconstrained density of
    :func:`padded_model`, and the Cholesky factor of the Hessian there.

    NumPyro's argument validation is off while tracing: on traced values it checks
    nothing, but it would still run (and compile) small eager programs on the constants
    of every distribution it builds.
    """
    with numpyro.validation_enabled(False):
        model_args = (x, row_mask, prior, covariance_type)
        _, start, unravel, real = _unconstrained(model_args, map_params)
        start = jnp.where(real, start, 0.0)  # the padded MAP's are 0; made sure

        def energy(flat):
            # Padded coordinates: a standard normal, uncoupled from the rest.
            padded = jnp.where(real, 0.0, flat)
            return (potential_energy(padded_model, model_args, {}, unravel(flat))
                    + 0.5 * jnp.sum(padded**2))

        flat, hessian, steps = newton(energy, start, lambda f: _hessian(energy, f, real))
        cholesky = jnp.linalg.cholesky(0.5 * (hessian + hessian.T))
        finite = jnp.all(jnp.isfinite(flat)) & jnp.all(jnp.isfinite(cholesky))
        return Centre(flat, cholesky, steps, jnp.linalg.norm(flat - start), finite, real)


def draws_core(key_data, flat, cholesky, x, row_mask, prior: GMMPrior,
               map_params: GMMParams, covariance_type: str, num_chains: int,
               num_samples: int, impl: str | None) -> GMMParams:
    """Independent draws ``u = mode + L^{-T} z`` (covariance (L L^T)^{-1} = H^{-1}),
    mapped back to the natural parameters; all slots, padded ones included."""
    with numpyro.validation_enabled(False):  # see centre_core
        model_args = (x, row_mask, prior, covariance_type)
        values, _, unravel, _ = _unconstrained(model_args, map_params)
        key = key_data if impl is None else jax.random.wrap_key_data(key_data, impl=impl)
        z = standard_normal(key, values, covariance_type, num_chains, num_samples)
        flat_draws = flat + jax.scipy.linalg.solve_triangular(
            cholesky.T, z[..., None], lower=False
        )[..., 0]

        def to_params(u):
            sites = constrain_fn(padded_model, model_args, {}, unravel(u))
            return GMMParams(sites["weights"], sites["means"], sites["covariances"])

        return jax.vmap(jax.vmap(to_params))(flat_draws)


# Jitted, and kept lowered on disk for the next process (bayes_gmm.program_store).
centre = program_store.stored_jit(centre_core, (4,))
draws = program_store.stored_jit(draws_core, (7, 8, 9, 10))


__all__ = ["HESSIAN_BLOCK", "NEWTON_STEPS", "NEWTON_TOL", "SLOT_PADDING_WORK", "Centre",
           "centre", "centre_core", "draws", "draws_core", "newton", "padded_model",
           "padded_shape", "sample", "standard_normal"]
