"""A grid of models (covariance types x numbers of components), fitted and scored as one
compiled program per covariance type.

This is the computation behind :func:`bayes_gmm.select_k`. For one covariance type every
K of the grid is a prior of its own (:func:`bayes_gmm.default_prior` for that K); the
priors are padded to a common number of component slots and fitted together by
:func:`bayes_gmm.em.fit_map_batch` (restarts included, all one ``vmap``), and the
responsibilities and log densities at every MAP come from one vmapped E-step. So a grid
over K = 1..9 compiles two programs per covariance type, and none at all when a grid of
the same data width, dtype and row bucket ran before (:mod:`bayes_gmm.padding`).

Nothing here validates: :mod:`bayes_gmm.selection` checks every argument first.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from bayes_gmm import padding, program_store
from bayes_gmm.covariance import KINDS
from bayes_gmm.em import EMInfo, GMMParams, e_step, fit_map_batch
from bayes_gmm.priors import COVARIANCE_TYPES


class ModelFit(NamedTuple):
    """The MAP of one (covariance type, K) and what the criteria need of it."""

    params: GMMParams  # the MAP, K components
    info: EMInfo
    log_likelihood: float  # log p(x | MAP), summed in float64 over the points
    entropy: float  # -sum_nk r_nk log r_nk at the MAP (ICL)
    live_components: int  # components with non-zero weight
    n_parameters: int  # free parameters of the live components


def model_key(key, covariance_type: str, k: int):
    """The key of one model of the grid: the same for a (type, K) whatever else is in the
    grid, so adding a covariance type or a K changes no other row."""
    return jax.random.fold_in(jax.random.fold_in(key, COVARIANCE_TYPES.index(covariance_type)), k)


def n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Free parameters: K - 1 weights, K D means, the covariance parameters."""
    kind = KINDS[covariance_type]
    return n_components - 1 + n_components * n_features + kind.n_parameters(
        n_components, n_features
    )


def fit_models(keys, x, priors, covariance_type, settings,
               rows=None) -> list[tuple[GMMParams, EMInfo]]:
    """The MAP under each prior (one covariance type, any Ks), as one compiled program;
    ``rows`` as in :func:`bayes_gmm.em.fit_map_batch`."""
    fits = fit_map_batch(
        keys, x, priors, covariance_type=covariance_type, n_init=settings["n_init"],
        max_iter=settings["max_iter"], tol=settings["tol"], rows=rows,
    )
    return jax.device_get(fits)


def point_scores(x, fits, covariance_type) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities and log densities of every point of ``x`` under every fit, from
    one vmapped E-step over the fits padded to common slots.

    Returns ``resp`` of shape (n_fits, N, slots) (zero in padded slots) and ``log_density``
    of shape (n_fits, N), both float64.
    """
    n_samples, n_features = x.shape
    sizes = [params.weights.shape[0] for params, _ in fits]
    rows, slots = padding.padded_shape(n_samples, max(sizes), n_features)
    slots = max(slots, max(sizes))
    x_padded, _ = padding.pad_rows(x, rows)
    padded = [padding.pad_params(params, slots, covariance_type) for params, _ in fits]
    stacked = GMMParams(*(np.stack(field) for field in zip(*padded, strict=True)))
    log_resp, log_density = jax.device_get(_batch_e_step(x_padded, stacked, covariance_type))
    log_resp = np.asarray(log_resp[:, :n_samples], np.float64)
    return np.exp(log_resp), np.asarray(log_density[:, :n_samples], np.float64)


def _batch_e_step_core(x, params, covariance_type):
    return jax.vmap(lambda p: e_step(x, p, covariance_type))(params)


_batch_e_step = program_store.stored_jit(_batch_e_step_core, static_argnums=(2,))


def summarise(fits, resp, log_density, covariance_type) -> list[ModelFit]:
    """Per fit: the log likelihood (float64 sum), the entropy of the responsibilities and
    the counts of live components and free parameters."""
    out = []
    for (params, info), r, density in zip(fits, resp, log_density, strict=True):
        # r log r -> 0 as r -> 0: a dead or padded component (r = 0) adds nothing.
        terms = r * np.log(np.where(r > 0, r, 1.0))
        live = int(np.sum(np.asarray(params.weights) > 0))
        out.append(ModelFit(
            params=params,
            info=info,
            log_likelihood=float(np.sum(density)),
            entropy=max(0.0, float(-np.sum(terms))),  # >= 0; also turns -0.0 into 0.0
            live_components=live,
            n_parameters=n_parameters(live, params.means.shape[1], covariance_type),
        ))
    return out


__all__ = ["ModelFit", "fit_models", "model_key", "n_parameters", "point_scores",
           "summarise"]
