"""NUTS on the NumPyro model in compiled programs: the chains' starts, warm-up and draws.

:class:`numpyro.infer.MCMC` builds, traces and compiles a new sampler on every call, and
before that runs the model eagerly to find the start: hundreds of small programs, each
compiled on its own (on a 2-core machine a smoke run of 2 x 100 iterations on Old Faithful
spent over half a minute compiling). Here the same pieces run inside traceable functions
of the data: :func:`numpyro.infer.util.initialize_model` (through the
:class:`numpyro.infer.NUTS` kernel, ``dynamic_args=True``) and the kernel's own
transitions, so

- :func:`run_chains` can be vmapped (simulation-based calibration runs many data sets
  side by side, :mod:`bayes_gmm.validation`), and
- :func:`sample` runs three programs (start, a stretch of transitions, the draws mapped
  back), compiled once per shape and settings: a second call on other data of the same
  shape compiles nothing, and a second process finds them in JAX's persistent cache.
  The transitions run in :data:`CALLS` stretches, so that a progress bar moves.

The draws are MCMC's: the same kernel, the keys split as ``MCMC.run`` splits them
(chains vectorised on one device, one per device when there are enough), the same
adaptation schedule and the same thinning (the last transition of every ``thinning``);
tests/test_nuts.py checks them against MCMC's to rounding.
"""

from __future__ import annotations

import contextlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.infer import NUTS, init_to_uniform, init_to_value
from numpyro.infer.util import constrain_fn, unconstrain_fn

from bayes_gmm import gibbs, program_store
from bayes_gmm.em import GMMParams
from bayes_gmm.model import gmm_model, init_values
from bayes_gmm.priors import GMMPrior

INITS = ("map", "default")
# The sampler statistics kept per draw, as MCMC's extra_fields name them.
STAT_FIELDS = ("diverging", "num_steps", "accept_prob")


def run_chains(key, x, prior: GMMPrior, start: GMMParams, covariance_type: str = "full", *,
               num_chains: int = 1, num_warmup: int = 500, num_samples: int = 1000,
               thinning: int = 1, init: str = "map", init_jitter=None):
    """NUTS chains on :func:`bayes_gmm.model.gmm_model`, vectorised; traceable.

    Parameters
    ----------
    key : PRNG key
        ``start_key, run_key = split(key)``: the first scatters the starts, the second is
        what ``MCMC.run`` would be given.
    start : GMMParams
        The MAP. With ``init="map"`` every chain starts there, scattered by
        ``init_jitter`` (:func:`bayes_gmm.gibbs.jitter_start`) unless it is None; with
        ``init="default"`` at NumPyro's default (uniform in (-2, 2), unconstrained).

    Returns
    -------
    draws : GMMParams
        Leading axes (chain, draw): ``num_samples // thinning`` draws per chain.
    stats : dict of str to Array
        :data:`STAT_FIELDS`, each of shape (chain, draw).
    start_ok : bool Array of shape (chain,)
        Whether each chain's start has a finite log density and gradient.
    """
    chain_keys, init_params = chain_starts(key, start, covariance_type, x, prior,
                                           num_chains=num_chains, init=init,
                                           init_jitter=init_jitter)
    return run_batch(chain_keys, init_params, x, prior, start, covariance_type,
                     num_warmup=num_warmup, num_samples=num_samples, thinning=thinning,
                     init=init)


def chain_starts(key, start, covariance_type, x, prior, *, num_chains, init, init_jitter):
    """Each chain's key and unconstrained start (None: the kernel's init strategy)."""
    start_key, run_key = jax.random.split(key)
    # MCMC.run splits its key per chain, but uses it whole for a single chain.
    chain_keys = jax.random.split(run_key, num_chains) if num_chains > 1 else run_key[None]
    if init != "map" or init_jitter is None:
        return chain_keys, None
    model = partial(gmm_model, covariance_type=covariance_type)
    starts = jax.vmap(lambda k: gibbs.jitter_start(k, start, init_jitter, covariance_type))(
        jax.random.split(start_key, num_chains))
    with numpyro.validation_enabled(False):  # see run_batch
        return chain_keys, jax.vmap(
            lambda p: unconstrain_fn(model, (x, prior), {}, init_values(p)))(starts)


def run_batch(chain_keys, init_params, x, prior, start, covariance_type, *, num_warmup,
              num_samples, thinning, init):
    """The chains of ``chain_keys`` (leading axis), as MCMC's vectorised chains:
    :func:`init_chains`, :func:`advance` over every transition, :func:`finish`."""
    settings = dict(num_warmup=num_warmup, num_samples=num_samples, thinning=thinning,
                    init=init)
    state, kept, start_ok = init_chains(chain_keys, init_params, x, prior, start,
                                        covariance_type, **settings)
    state, kept = advance(state, kept, 0, x, prior, start, covariance_type,
                          steps=num_warmup + num_samples, **settings)
    draws, stats = finish(kept, x, prior, covariance_type)
    return draws, stats, start_ok


def _kernel(start, covariance_type, init):
    strategy = init_to_value(values=init_values(start)) if init == "map" else init_to_uniform
    return NUTS(partial(gmm_model, covariance_type=covariance_type), init_strategy=strategy)


def _fields(state):
    return state.z, tuple(getattr(state, f) for f in STAT_FIELDS)


def init_chains(chain_keys, init_params, x, prior, start, covariance_type, *, num_warmup,
                num_samples, thinning, init):
    """The chains' initial NUTS state, an empty buffer of kept draws, and whether each
    start has a finite log density and gradient.

    NumPyro's argument validation is off while tracing (here and in :func:`advance`): on
    traced values it checks nothing, but it would still run (and compile) small eager
    programs on the constants of every distribution it builds.
    """
    with numpyro.validation_enabled(False):
        state = _kernel(start, covariance_type, init).init(
            chain_keys, num_warmup, init_params, model_args=(x, prior), model_kwargs={})
    finite = [jnp.isfinite(state.potential_energy)] + [
        jnp.all(jnp.isfinite(g).reshape(g.shape[0], -1), axis=1)
        for g in jax.tree.leaves(state.z_grad)]
    kept = jax.tree.map(lambda a: jnp.zeros((num_samples // thinning, *a.shape), a.dtype),
                        _fields(state))
    return state, kept, jnp.all(jnp.stack(finite), axis=0)


def advance(state, kept, first, x, prior, start, covariance_type, *, num_warmup, num_samples,
            thinning, init, steps):
    """Transitions ``first`` to ``first + steps`` (at most to the last), keeping draws.

    One loop for warm-up and draws, like MCMC's, so XLA compiles the NUTS transition
    once. As in MCMC, a draw is kept at the last transition of every ``thinning``, counted
    back from the end; transitions before (warm-up, and the first
    ``num_samples % thinning`` draws) write out of bounds, which is dropped.
    """
    kernel = _kernel(start, covariance_type, init)
    num_kept = num_samples // thinning
    offset = num_warmup + num_samples % thinning
    with numpyro.validation_enabled(False):
        # NumPyro sets the kernel's transition up (adaptation schedule, tree depth) in
        # its init; the state that init returns is unused, and XLA drops it.
        kernel.init(state.rng_key, num_warmup, state.z, model_args=(x, prior),
                    model_kwargs={})

        def transition(i, carry):
            state, kept = carry
            state = kernel.sample(state, (x, prior), {})
            after = i - offset
            slot = jnp.where((after >= 0) & (after % thinning == thinning - 1),
                             after // thinning, num_kept)
            kept = jax.tree.map(lambda buffer, a: buffer.at[slot].set(a, mode="drop"),
                                kept, _fields(state))
            return state, kept

        last = jnp.minimum(first + steps, num_warmup + num_samples)
        return jax.lax.fori_loop(first, last, transition, (state, kept))


def finish(kept, x, prior, covariance_type):
    """The kept draws in the natural parameters, chain axis first, and their statistics."""
    z, stats = kept
    model = partial(gmm_model, covariance_type=covariance_type)
    with numpyro.validation_enabled(False):
        values = jax.vmap(jax.vmap(lambda u: constrain_fn(model, (x, prior), {}, u)))(z)
    by_chain = partial(jnp.swapaxes, axis1=0, axis2=1)
    draws = GMMParams(*(by_chain(values[site])
                        for site in ("weights", "means", "covariances")))
    return draws, dict(zip(STAT_FIELDS, map(by_chain, stats), strict=True))


# The three steps of sample(), each compiled once per shape and settings (a next process
# finds XLA's compilation in the persistent cache, bayes_gmm.compilation_cache), at -O1 on
# small data as the stored programs are (bayes_gmm.program_store.sized_jit). Unlike
# the EM programs they are not kept lowered (bayes_gmm.program_store): NumPyro's state
# does not serialise, and tracing them takes a second or two, next to a sampler's run.
def _start_core(key_data, x, prior, start, init_jitter, covariance_type, num_chains,
                num_warmup, num_samples, thinning, init, impl):
    key = program_store.wrap_key(key_data, impl)
    chain_keys, init_params = chain_starts(key, start, covariance_type, x, prior,
                                           num_chains=num_chains, init=init,
                                           init_jitter=init_jitter)
    return init_chains(chain_keys, init_params, x, prior, start, covariance_type,
                       num_warmup=num_warmup, num_samples=num_samples, thinning=thinning,
                       init=init)


def _advance_core(state, kept, first, x, prior, start, covariance_type, num_warmup,
                  num_samples, thinning, init, steps):
    return advance(state, kept, first, x, prior, start, covariance_type,
                   num_warmup=num_warmup, num_samples=num_samples, thinning=thinning,
                   init=init, steps=steps)


_start = program_store.sized_jit(_start_core, static_argnums=(5, 6, 7, 8, 9, 10, 11))
_advance = program_store.sized_jit(_advance_core, static_argnums=(6, 7, 8, 9, 10, 11))
_finish = program_store.sized_jit(finish, static_argnums=(3,))
# Transitions per call of _advance: the progress bar moves 20 times, and a run can be
# interrupted between calls; the dispatches cost nothing measurable.
CALLS = 20


def sample(key, x, prior: GMMPrior, start: GMMParams, covariance_type: str = "full", *,
           num_chains: int = 4, num_warmup: int = 500, num_samples: int = 1000,
           thinning: int = 1, init: str = "map", init_jitter: float = 0.0,
           progress_bar: bool = False):
    """:func:`run_chains` by three programs compiled once per shape and settings (a
    second call, or a second process, compiles nothing); NumPy arrays out.

    The chains run vectorised on one device, or one per device when there are as many
    devices as chains (as ``MCMC``'s ``chain_method="parallel"``; one program, no bar).

    Raises
    ------
    FloatingPointError
        If a chain's start has a non-finite log density or gradient.
    """
    key_data, impl = program_store.key_data(key)
    settings = dict(num_warmup=num_warmup, num_samples=num_samples, thinning=thinning,
                    init=init)
    jitter = None if init_jitter == 0 else np.asarray(init_jitter, x.dtype)
    if num_chains > 1 and jax.local_device_count() >= num_chains:
        draws, stats, start_ok = _parallel(key_data, impl, x, prior, start, jitter,
                                           covariance_type, num_chains, settings)
        _check_start(start_ok)
        return jax.device_get((draws, stats))
    static = (covariance_type, num_warmup, num_samples, thinning, init)
    state, kept, start_ok = _start(key_data, x, prior, start, jitter, covariance_type,
                                   num_chains, *static[1:], impl)
    _check_start(start_ok)
    total = num_warmup + num_samples
    steps = -(-total // CALLS)
    with _bar(total, num_warmup, progress_bar) as moved:
        for first in range(0, total, steps):
            state, kept = _advance(state, kept, np.int32(first), x, prior, start, *static,
                                   steps)
            jax.block_until_ready(kept)
            moved(min(steps, total - first))
    return jax.device_get(_finish(kept, x, prior, covariance_type))


def _check_start(start_ok):
    if not bool(np.all(start_ok)):
        raise FloatingPointError(
            "NUTS could not start: the log density or its gradient is not finite at a "
            "chain's start. Start at the MAP (init='map', the default) with a smaller "
            "init_jitter, or use method='gibbs'."
        )


@contextlib.contextmanager
def _bar(total, num_warmup, shown):
    """A function that moves a tqdm bar over the transitions (like the bar MCMC shows) by
    n, or does nothing."""
    if not shown:
        yield lambda n: None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="warmup" if num_warmup else "sample") as bar:
        def update(n):
            bar.update(n)
            if bar.n >= num_warmup:
                bar.set_description("sample")
        yield update


def _parallel(key_data, impl, x, prior, start, jitter, covariance_type, num_chains, settings):
    """One chain per device: the starts as in :func:`run_chains`, then each device runs
    its own chain (:func:`jax.shard_map`; the chains never exchange data)."""
    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.array(jax.local_devices()[:num_chains]), ("chain",))
    chain, whole = PartitionSpec("chain"), PartitionSpec()

    @jax.jit
    def run(key_data, x, prior, start, jitter):
        key = program_store.wrap_key(key_data, impl)
        keys, init_params = chain_starts(key, start, covariance_type, x, prior,
                                         num_chains=num_chains, init=settings["init"],
                                         init_jitter=jitter)

        def batch(keys, init_params, x, prior, start):
            return run_batch(keys, init_params, x, prior, start, covariance_type, **settings)

        # NumPyro's loops do not declare which values vary across devices: unchecked.
        return jax.shard_map(batch, mesh=mesh, in_specs=(chain, chain, whole, whole, whole),
                             out_specs=chain, check_vma=False)(keys, init_params, x, prior,
                                                               start)

    return run(key_data, x, prior, start, jitter)


__all__ = ["INITS", "STAT_FIELDS", "chain_starts", "run_batch", "run_chains", "sample"]
