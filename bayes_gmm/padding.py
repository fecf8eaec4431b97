"""Shared shapes for small problems, so that one compiled program serves them all.

On small data (Old Faithful is 272 x 2) compiling an EM program takes a thousand times
longer than running it, and every new number of components or of points would compile a
new one. So a small problem is *padded* before it reaches the compiled core:

- rows up to a bucket (:func:`row_bucket`: four steps per doubling, at least
  :data:`MIN_ROWS`), the padded rows carrying a row mask of zero, so they add nothing to
  any sum;
- component slots up to a power of two (at least :data:`MIN_SLOTS`), the padded slots
  marked by a Dirichlet concentration of zero in the prior (a real component always has
  a positive one). Such a slot starts and stays with weight exactly zero, so it takes no
  responsibility, adds nothing to the statistics and is left out of the log prior, like a
  component that died (see :mod:`bayes_gmm.em`).

One program per (covariance type, D, dtype, row bucket, settings) then serves every K up
to the slot count, and a grid of K values or of priors is one ``vmap`` of it. The result
equals the unpadded fit to rounding (tests/test_padding.py). Large problems are not
padded: there the arithmetic dominates and padding would cost real time, so their shapes
are used as they are (one compilation each, amortised by the work).

Padding and unpadding happen outside the compiled program, in NumPy when the arrays are
concrete (an eager JAX slice, even ``jnp.asarray``, would itself compile a small program
per shape) and in
``jax.numpy`` when they are traced (a fit inside the user's ``jit`` or ``vmap``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# The smallest buckets: 64 rows, 16 component slots. A problem is padded only while the
# padded (slots, D, rows) temporaries of one pass stay within PAD_ELEMENTS (one chunk of
# the E-step, 4 MB in float32); beyond that the padding would cost measurable time.
MIN_ROWS = 64
MIN_SLOTS = 16
PAD_ELEMENTS = 2**20
# A sampler passes over the same padded shapes thousands of times, so its padding is
# also kept within PAD_PASS_ELEMENTS over all its passes: about 3 s of extra work on one
# core (~10 ns an element, Gibbs on Old Faithful), the time of the compilation it saves.
PAD_PASS_ELEMENTS = 2**28
# The smallest buffer of draws of a padded sampler (draw_buffer).
MIN_DRAWS = 256


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def row_bucket(n_samples: int) -> int:
    """The smallest of 64, 80, 96, 112, 128, 160, ... (four steps per doubling) that holds
    ``n_samples`` rows: at most 25% padding, and few distinct programs."""
    if n_samples <= MIN_ROWS:
        return MIN_ROWS
    step = _next_power_of_two(n_samples) // 8
    return -(-n_samples // step) * step


def padded_shape(n_samples: int, n_components: int, n_features: int) -> tuple[int, int]:
    """(rows, slots) that a problem of this size is fitted in: its own size when large."""
    rows = row_bucket(n_samples)
    slots = max(MIN_SLOTS, _next_power_of_two(n_components))
    if rows * slots * max(1, n_features) > PAD_ELEMENTS:
        return n_samples, n_components
    return rows, slots


def padded_shape_for_passes(n_samples: int, n_components: int, n_features: int,
                            passes: int) -> tuple[int, int]:
    """:func:`padded_shape` for a program that makes ``passes`` passes over the data (a
    sampler: transitions times chains): its own size also where the padding would add
    more than :data:`PAD_PASS_ELEMENTS` elements over all passes, i.e. cost more time
    than the compilation it saves (Gibbs on N = 1e4, D = 5, K = 4 in 16 slots: 6x)."""
    rows, slots = padded_shape(n_samples, n_components, n_features)
    extra = (rows * slots - n_samples * n_components) * max(1, n_features) * passes
    if extra > PAD_PASS_ELEMENTS:
        return n_samples, n_components
    return rows, slots


def draw_buffer(num_draws: int) -> int:
    """The draws a padded sampler's program keeps room for: a power of two, at least
    :data:`MIN_DRAWS`, so that one program serves every ``num_draws`` up to it (the number
    of draws, the warmup and the thinning are then arguments of the program)."""
    return max(MIN_DRAWS, _next_power_of_two(num_draws))


def is_traced(*arrays) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(arrays))


def _xp(*arrays):
    return jnp if is_traced(*arrays) else np


def pad_rows(x, rows: int):
    """``x`` (N, D) with zero rows appended up to ``rows``, and the row mask (rows,)."""
    xp = _xp(x)
    n_samples = x.shape[0]
    mask = (xp.arange(rows) < n_samples).astype(x.dtype)
    if rows == n_samples:
        return x, mask
    return xp.concatenate([x, xp.zeros((rows - n_samples, x.shape[1]), x.dtype)]), mask


def pad_components(a, slots: int, fill=0.0):
    """``a`` with its leading axis (K) extended to ``slots`` by ``fill``."""
    xp = _xp(a)
    a = xp.asarray(a)
    extra = slots - a.shape[0]
    if extra == 0:
        return a
    block = xp.broadcast_to(xp.asarray(fill, a.dtype), (extra, *a.shape[1:]))
    return xp.concatenate([a, block])


def pad_prior(prior, slots: int):
    """The prior with ``slots`` components: the extra ones have concentration zero."""
    return prior._replace(weight_concentration=pad_components(prior.weight_concentration,
                                                              slots))


def pad_params(params, slots: int, covariance_type: str):
    """Parameters (fields may be None) with ``slots`` components: the extra ones have
    weight zero, mean zero and unit covariance (any valid value would do)."""
    weights, means, covariances = params
    if covariances is not None and covariance_type != "tied":
        xp = _xp(covariances)
        unit = xp.eye(covariances.shape[-1]) if covariance_type == "full" else 1.0
        covariances = pad_components(covariances, slots, unit)
    return type(params)(
        None if weights is None else pad_components(weights, slots),
        None if means is None else pad_components(means, slots),
        covariances,
    )


def fold_in_keys(key, n: int):
    """``jax.random.fold_in(key, i)`` for i < ``n``, one key per component slot or row:
    the random numbers of slot (or row) i do not depend on how many follow it, so padding
    changes no real one's draw (unlike one draw of shape (n, ...), whose first rows
    depend on n)."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def _first(a, k: int, axis: int = 0):
    if a.shape[axis] == k:
        return a
    index = (slice(None),) * axis + (slice(0, k),)
    if is_traced(a):
        return a[index]
    # device_put, not jnp.asarray: the latter compiles a small program per shape.
    return jax.device_put(np.asarray(a)[index])


def unpad_params(params, k: int, covariance_type: str, axis: int = 0):
    """The first ``k`` components of padded parameters (``axis``: where K sits, 1 for a
    history with a leading step axis)."""
    weights, means, covariances = params
    if covariance_type != "tied":
        covariances = _first(covariances, k, axis)
    return type(params)(_first(weights, k, axis), _first(means, k, axis), covariances)


def unpad_components(a, k: int):
    """The first ``k`` entries of a per-component array (leading axis K)."""
    return _first(a, k)


def unpad_axis(a, k: int, axis: int):
    """The first ``k`` entries of ``a`` along ``axis``: a per-component array with other
    axes in front of K (chains and draws of a sampler)."""
    return _first(a, k, axis)


__all__ = [
    "MIN_DRAWS",
    "MIN_ROWS",
    "MIN_SLOTS",
    "PAD_ELEMENTS",
    "PAD_PASS_ELEMENTS",
    "draw_buffer",
    "fold_in_keys",
    "is_traced",
    "pad_components",
    "pad_params",
    "pad_prior",
    "pad_rows",
    "padded_shape",
    "padded_shape_for_passes",
    "unpad_axis",
    "unpad_components",
    "unpad_params",
]
