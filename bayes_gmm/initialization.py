"""Where EM starts: k-means++ seeding, random soft assignments, or centres from the data.

Every method gives starting responsibilities of shape (rows, slots), from which one
M-step gives the starting parameters (:func:`bayes_gmm.em.fit_map`). The shapes are
*padded* (:mod:`bayes_gmm.padding`): of ``rows`` only the first ``n_samples`` are points
(``row_mask`` is 1 for them), and of ``slots`` only the first ``n_components`` are
components. Padding must not change the start, so every random draw here is made so that
its values for the real rows and components do not depend on how many padded ones follow:

- one uniform draw per row and per component slot, from a key of its own
  (``jax.random.fold_in``) or as a prefix of a longer 1-D draw (JAX's counter-based
  ``threefry`` gives the first n values of a draw of any length the same);
- draws proportional to weights by the Gumbel-max trick, one 1-D draw per pick, so that
  rows of weight zero (the padding) are never picked and do not shift the others;
- loops over component slots that run to the padded count and leave slots beyond
  ``n_components`` untouched.

The result equals that of the unpadded problem to rounding (tests/test_padding.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

INIT_METHODS = ("k-means++", "random", "random_from_data")

# k-means++ scores 2 + log K candidates for every new centre (as scikit-learn does); the
# candidates are drawn this many at a time, a number that does not depend on K, so that a
# padded K draws the same ones. 8 covers K up to e^6 ~ 400.
MAX_TRIALS = 8


def squared_distances(x, centres):
    """|x_n - c_j|^2 of shape (N, J) by one matrix product (clipped: it may round below 0)."""
    d2 = (
        jnp.sum(x * x, 1)[:, None]
        - 2 * x @ centres.T
        + jnp.sum(centres * centres, 1)[None, :]
    )
    return jnp.maximum(d2, 0.0)


def nearest_centre(x, centres, n_components=None):
    """Hard responsibilities: one-hot of the nearest of the first ``n_components`` centres
    (all of them by default), shape (N, len(centres))."""
    d2 = squared_distances(x, centres)
    if n_components is not None:
        d2 = jnp.where(jnp.arange(centres.shape[0]) < n_components, d2, jnp.inf)
    return jax.nn.one_hot(jnp.argmin(d2, axis=1), centres.shape[0], dtype=x.dtype)


def draw_proportional(key, weights, n_draws):
    """``n_draws`` indices drawn with probability proportional to ``weights`` (>= 0, not
    all zero), by the Gumbel-max trick with one key per draw: rows of weight zero are
    never drawn, and a draw's noise for a row does not depend on the rows after it."""
    logits = jnp.log(weights)

    def one(index):
        noise = jax.random.gumbel(jax.random.fold_in(key, index), weights.shape, weights.dtype)
        return jnp.argmax(logits + noise)

    return jax.vmap(one)(jnp.arange(n_draws))


def kmeans_plus_plus(key, x, n_components, row_mask=None, n_slots=None):
    """Greedy k-means++ seeding (Arthur and Vassilvitskii, 2007), as scikit-learn does it.

    Each new centre is the best, by total squared distance, of ``2 + log K`` candidates
    drawn with probability proportional to the squared distance to the nearest centre.

    Parameters
    ----------
    key : jax.Array
    x : Array of shape (rows, D)
    n_components : int or traced int
        K, the centres wanted.
    row_mask : Array of shape (rows,), optional
        1 for the points, 0 for padded rows (which are never chosen); default all points.
    n_slots : int, optional
        Rows of the result (static, >= K); slots beyond K are left at zero.

    Returns
    -------
    centres : Array of shape (n_slots, D)
    """
    if row_mask is None:
        row_mask = jnp.ones(x.shape[0], x.dtype)
    if n_slots is None:
        n_slots = n_components
    n_trials = 2 + jnp.floor(jnp.log(jnp.asarray(n_components, x.dtype))).astype(jnp.int32)
    first_key, key = jax.random.split(key)
    n_points = jnp.sum(row_mask).astype(jnp.int32)
    first = jax.random.randint(first_key, (), 0, n_points)
    centres = jnp.zeros((n_slots, x.shape[1]), x.dtype).at[0].set(x[first])
    closest = squared_distances(x, x[first][None])[:, 0] * row_mask

    def add_centre(j, carry):
        centres, closest, key = carry
        key, trial_key = jax.random.split(key)
        # All distances zero (every point identical): fall back to a uniform draw.
        weights = jnp.where(jnp.any(closest > 0), closest, row_mask)
        candidates = draw_proportional(trial_key, weights, MAX_TRIALS)
        trial_closest = jnp.minimum(closest[None], squared_distances(x, x[candidates]).T)
        trial_closest = trial_closest * row_mask
        potential = jnp.where(jnp.arange(MAX_TRIALS) < n_trials,
                              jnp.sum(trial_closest, 1), jnp.inf)
        best = jnp.argmin(potential)
        added = (centres.at[j].set(x[candidates[best]]), trial_closest[best], key)
        return jax.tree.map(lambda new, old: jnp.where(j < n_components, new, old),
                            added, carry)

    centres, _, _ = lax.fori_loop(1, n_slots, add_centre, (centres, closest, key))
    return centres


def centres_from_data(key, x, n_components, row_mask=None, n_slots=None):
    """``n_components`` distinct points chosen uniformly at random, shape (n_slots, D):
    the points with the largest of one uniform draw per row."""
    if row_mask is None:
        row_mask = jnp.ones(x.shape[0], x.dtype)
    if n_slots is None:
        n_slots = n_components
    u = jnp.where(row_mask > 0, jax.random.uniform(key, (x.shape[0],), x.dtype), -1.0)
    return x[lax.top_k(u, n_slots)[1]]


def random_responsibilities(key, n_rows, n_slots, n_components, dtype):
    """Uniform random soft assignments to the first ``n_components`` slots, shape
    (n_rows, n_slots): every component starts near the data mean with a covariance close
    to the data's (the "diffuse" start of the classic tutorial)."""
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n_slots))
    r = jax.vmap(lambda k: jax.random.uniform(k, (n_rows,), dtype))(keys).T
    r = jnp.where(jnp.arange(n_slots) < n_components, r, 0.0)
    return r / jnp.sum(r, 1, keepdims=True)


def initial_responsibilities(key, x, n_components, method, row_mask=None, n_slots=None):
    """Starting responsibilities of shape (rows, n_slots) by ``method`` (one of
    :data:`INIT_METHODS`), zero on padded rows and slots."""
    if row_mask is None:
        row_mask = jnp.ones(x.shape[0], x.dtype)
    if n_slots is None:
        n_slots = n_components
    if method == "random":
        r = random_responsibilities(key, x.shape[0], n_slots, n_components, x.dtype)
    elif method == "random_from_data":
        r = nearest_centre(x, centres_from_data(key, x, n_components, row_mask, n_slots),
                           n_components)
    else:
        r = nearest_centre(x, kmeans_plus_plus(key, x, n_components, row_mask, n_slots),
                           n_components)
    return r * row_mask[:, None]


__all__ = [
    "INIT_METHODS",
    "centres_from_data",
    "draw_proportional",
    "initial_responsibilities",
    "kmeans_plus_plus",
    "nearest_centre",
    "random_responsibilities",
    "squared_distances",
]
