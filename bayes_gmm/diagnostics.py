"""Posterior draws as an ArviZ DataTree, label alignment, and MAP-versus-posterior tables.

Every way of reaching the posterior (NUTS, the conjugate Gibbs sampler, a Laplace
approximation) hands over its draws as one :class:`bayes_gmm.GMMParams` whose arrays
carry two leading axes, (chain, draw), plus a few per-draw statistics. This module turns
that into the one object the rest of the project reads: an ``xarray.DataTree`` in ArviZ's
1.x layout (:func:`to_datatree`), with the data, the prior and the MAP estimate stored
beside the draws so that a saved file (:func:`save_datatree`, :func:`load_datatree`)
answers every later question on its own.

A mixture's likelihood does not change when the component labels are permuted, so the
posterior has K! symmetric copies and a sampler may wander between them (label
switching). Averages, R-hat and ESS of component-wise parameters are meaningless until
every draw is relabelled consistently. :func:`align_to_pivot` does that against the MAP
estimate (the pivot), one assignment problem per draw; :func:`align_datatree` applies it
to a tree and records the permutations. Label-invariant quantities (log likelihood, log
posterior, sorted weights, the number of occupied components;
:func:`label_invariant_summaries`) need no alignment and are the first thing to check.

:func:`diagnostics_table` (R-hat, bulk and tail ESS, divergences) and
:func:`compare_map_posterior` (the MAP against posterior means, HDIs and the
distribution of the log posterior) are the tables a person reads. Statistics come from
``arviz_stats``; the log densities from the same JAX code and NumPyro model that the EM
core and the samplers use (:func:`bayes_gmm.e_step`, :func:`bayes_gmm.model.gmm_model`),
evaluated in blocks of draws so that memory stays bounded.
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NamedTuple

import arviz_base
import arviz_stats  # noqa: F401  (registers the .azstats accessors used below)
import jax
import numpy as np
import pandas as pd
import xarray as xr
from numpyro import handlers
from scipy.optimize import linear_sum_assignment

from bayes_gmm import program_store
from bayes_gmm.em import GMMParams, e_step
from bayes_gmm.em import log_prior as em_log_prior
from bayes_gmm.model import gmm_model, init_values
from bayes_gmm.priors import GMMPrior, check_covariance_type

SAMPLE_DIMS = ("chain", "draw")
PARAMETER_NAMES = ("weights", "means", "covariances")
COVARIANCE_DIMS = {
    "full": ("component", "feature", "feature_bis"),
    "tied": ("feature", "feature_bis"),
    "diag": ("component", "feature"),
    "spherical": ("component",),
}
PARAMETER_DIMS = {"weights": ("component",), "means": ("component", "feature")}

# NumPyro's names of sample statistics -> ArviZ's (as arviz_base.from_numpyro renames them).
# `potential_energy` is not renamed to `lp`: it is taken in NumPyro's unconstrained space
# and includes the log-Jacobians of its transforms, so it is not the log posterior density
# that the MAP maximises. `lp` is always computed here.
SAMPLE_STAT_NAMES = {"accept_prob": "acceptance_rate", "num_steps": "n_steps",
                     "adapt_state.step_size": "step_size"}
COMPUTED_STATS = ("lp", "log_likelihood")

# Elements (float) that one block of draws may hold while the log densities are evaluated.
DRAW_BLOCK_ELEMENTS = 2**24
# Per-draw working set of e_step besides its outputs (see bayes_gmm.em.CHUNK_ELEMENTS).
_E_STEP_ELEMENTS = 2**17
# Draws whose alignment costs are computed at once (a (B, K, K, D) float64 temporary).
ALIGN_BLOCK = 512
# The first bytes of every HDF5 (so netCDF4) file that starts at offset 0.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

ALIGNMENT_COST = (
    "complete-data KL divergence to the pivot: "
    "sum_j w_j [log(w_j / w0_s(j)) + KL(N(mu_j, S_j) || N(mu0_s(j), S0_s(j)))]"
)


class _Pivot(NamedTuple):
    """The pivot's quantities that every alignment cost needs, in float64."""

    log_weights: np.ndarray  # (K,) log w0_k, floored at the smallest normal float
    means: np.ndarray  # (K, D)
    whitening: np.ndarray  # full (K, D, D) | tied (D, D): L0^{-1}; diag (K, D) | sph (K,): 1/var
    precision: np.ndarray | None  # full (K, D, D): Sigma0_k^{-1}; else None
    half_log_det: np.ndarray  # (K,) 0.5 log |Sigma0_k| (zeros for tied: constant)


# --------------------------------------------------------------------------------------
# Building the tree


def to_datatree(
    draws: GMMParams,
    *,
    x,
    prior: GMMPrior,
    covariance_type: str,
    method: str,
    map_params: GMMParams | None = None,
    map_info: dict | None = None,
    sample_stats: dict | None = None,
    feature_names=None,
    attrs: dict | None = None,
    align: bool = True,
    log_likelihood: bool = True,
) -> xr.DataTree:
    """Posterior draws, data, prior and MAP estimate as one DataTree in ArviZ 1.x layout.

    Parameters
    ----------
    draws : GMMParams
        Posterior draws with leading axes (chain, draw): weights (C, S, K), means
        (C, S, K, D), covariances full (C, S, K, D, D), tied (C, S, D, D), diag
        (C, S, K, D), spherical (C, S, K). NumPy or JAX arrays.
    x : array of shape (n_samples, n_features)
        The data the posterior conditions on.
    prior : GMMPrior
        The prior of the model (:func:`bayes_gmm.default_prior`).
    covariance_type : {"full", "tied", "diag", "spherical"}
    method : str
        How the draws were made, e.g. ``"nuts"``, ``"gibbs"``, ``"laplace"``.
    map_params : GMMParams, optional
        The MAP estimate, stored in the ``map`` group and used as the pivot of the label
        alignment. Without it there is no ``map`` group and no alignment.
    map_info : dict or EMInfo, optional
        Facts about the MAP fit (``n_iter``, ``converged``, ``log_posterior``, ...). Scalars
        and 1-D arrays are stored as variables of the ``map`` group (``history`` trimmed to
        the steps taken); ``None`` values and nested structures are left out.
    sample_stats : dict of str to array of shape (C, S), optional
        Per-draw statistics of the sampler (``diverging``, ``occupied``, ...). NumPyro's
        names are translated to ArviZ's (``accept_prob`` -> ``acceptance_rate``,
        ``num_steps`` -> ``n_steps``). ``lp`` and ``log_likelihood`` are always computed
        here from the draws and replace any given under those names (see Notes).
    feature_names : sequence of str, optional
        Coordinates of the ``feature`` dimension; by default ``0 .. D - 1``.
    attrs : dict, optional
        Extra attributes of the root (e.g. ``sampling_time`` in seconds, a seed, sampler
        settings). Booleans are stored as 0/1, dicts and lists of strings as JSON strings,
        as netCDF needs.
    align : bool, default True
        Relabel every draw to match the MAP (:func:`align_to_pivot`) before storing. The
        permutations are kept in ``sample_stats.label_permutation``, so the raw draws can
        be recovered.
    log_likelihood : bool, default True
        Store the pointwise ``log_likelihood`` group (C x S x N values, what LOO needs).
        With False only the per-draw totals are kept (in ``sample_stats``): for large N
        the pointwise group may not fit in memory or on disk.

    Returns
    -------
    xarray.DataTree
        Groups (dimensions in parentheses):

        - ``posterior``: ``weights`` (chain, draw, component), ``means`` (chain, draw,
          component, feature), ``covariances`` (chain, draw, *covariance dims*), where the
          covariance dims are full (component, feature, feature_bis), tied (feature,
          feature_bis), diag (component, feature), spherical (component).
        - ``sample_stats``: ``lp`` (chain, draw), the log posterior density
          ``log p(x | theta) + log p(theta)``; ``log_likelihood`` (chain, draw), its first
          term; the given statistics; ``label_permutation`` (chain, draw, component) when
          aligned.
        - ``log_likelihood`` (unless ``log_likelihood=False``): ``x`` (chain, draw,
          obs_id), ``log p(x_n | theta)``.
        - ``log_prior``: the log prior density of each sample site of the NumPyro model,
          ``weights`` (chain, draw), ``means`` (chain, draw, component), ``covariances``
          (chain, draw, component), or (chain, draw) when tied. They add up to
          ``log p(theta)``; ``arviz_stats.psense`` sums every variable of this group
          (select some with its ``prior_var_names``/``group_var_names``).
        - ``observed_data``: ``x`` (obs_id, feature).
        - ``map`` (if ``map_params``): ``weights``, ``means``, ``covariances`` without
          chain and draw; ``lp`` and ``log_likelihood`` computed here; the entries of
          ``map_info``.

        Root attributes: ``covariance_type``, ``method``, ``n_components``,
        ``n_features``, ``n_observations``, ``prior_hyperparameters`` (JSON; see
        :func:`prior_from_datatree`), ``bayes_gmm_version``, ``created_at``, library
        versions, ``aligned`` (0/1) and, when aligned, ``alignment_pivot``,
        ``alignment_cost`` and ``relabelled_fraction``.

    Notes
    -----
    ``lp`` is the log posterior density in the natural parametrisation (weights,
    means, covariances), normalising constants included: exactly the objective the EM
    core maximises, so the MAP's ``lp`` is an upper bound of every draw's (up to rounding)
    and the two can be compared. A sampler's own ``lp`` may be taken elsewhere (NumPyro's
    potential energy lives in an unconstrained space and carries log-Jacobians) and is
    therefore not used. Values are float64 sums of the per-point terms.
    """
    covariance_type = check_covariance_type(covariance_type)
    x = _check_x(x)
    n_samples, n_features = x.shape
    draws = _check_draws(draws, covariance_type, n_features)
    n_chains, n_draws, n_components = draws.weights.shape
    prior = _check_prior(prior, covariance_type, n_components, n_features)
    features = _feature_coordinate(feature_names, n_features)
    stats = _check_sample_stats(sample_stats, n_chains, n_draws)
    if map_params is not None:
        map_params = _check_params(map_params, covariance_type, n_components, n_features,
                                   "map_params")

    permutations = None
    if align and map_params is not None:
        draws, permutations = align_to_pivot(draws, map_params, covariance_type)

    flat = GMMParams(*(a.reshape(n_chains * n_draws, *a.shape[2:]) for a in draws))
    pointwise, totals, site_log_priors = _draw_log_densities(
        x, flat, prior, covariance_type, keep_pointwise=log_likelihood)
    site_log_priors = {name: v.reshape(n_chains, n_draws, *v.shape[1:])
                       for name, v in site_log_priors.items()}
    total_log_likelihood = totals.reshape(n_chains, n_draws)
    total_log_prior = sum(v.reshape(n_chains, n_draws, -1).sum(-1, dtype=np.float64)
                          for v in site_log_priors.values())

    coords = {
        "chain": np.arange(n_chains),
        "draw": np.arange(n_draws),
        "component": np.arange(n_components),
        "feature": features,
        "feature_bis": features,
        "obs_id": np.arange(n_samples),
    }
    group_attrs = _group_attrs()
    posterior = _params_dataset(draws, covariance_type, coords, SAMPLE_DIMS, group_attrs)

    stats["lp"] = total_log_likelihood + total_log_prior
    stats["log_likelihood"] = total_log_likelihood
    stats_vars = {name: (SAMPLE_DIMS, value) for name, value in stats.items()}
    if permutations is not None:
        stats_vars["label_permutation"] = (SAMPLE_DIMS + ("component",), permutations)
    groups = {
        "posterior": posterior,
        "sample_stats": _dataset(stats_vars, coords, group_attrs),
        "log_prior": _dataset(
            {
                "weights": (SAMPLE_DIMS, site_log_priors["weights"]),
                "means": (SAMPLE_DIMS + ("component",), site_log_priors["means"]),
                "covariances": (
                    SAMPLE_DIMS + (() if covariance_type == "tied" else ("component",)),
                    site_log_priors["covariances"],
                ),
            },
            coords,
            group_attrs,
        ),
        "observed_data": _dataset({"x": (("obs_id", "feature"), x)}, coords,
                                  _group_attrs()),
    }
    if log_likelihood:
        pointwise = pointwise.reshape(n_chains, n_draws, n_samples)
        groups["log_likelihood"] = _dataset(
            {"x": (SAMPLE_DIMS + ("obs_id",), pointwise)}, coords, group_attrs)
    if map_params is not None:
        groups["map"] = _map_dataset(x, map_params, map_info, prior, covariance_type, coords)

    root = {
        "covariance_type": covariance_type,
        "method": str(method),
        "n_components": n_components,
        "n_features": n_features,
        "n_observations": n_samples,
        "float_dtype": str(_jax_dtype(x)),
        "prior_hyperparameters": _prior_to_json(prior),
        **_library_attrs(),
        "aligned": 0,
    }
    if permutations is not None:
        root.update(_alignment_attrs(permutations, "map"))
    root.update(_netcdf_attrs(attrs or {}))
    tree = xr.DataTree.from_dict(groups)
    tree.attrs = root
    return tree


def prior_from_datatree(tree: xr.DataTree) -> GMMPrior:
    """The :class:`GMMPrior` stored in a tree's ``prior_hyperparameters`` attribute."""
    try:
        fields = json.loads(tree.attrs["prior_hyperparameters"])
        return GMMPrior(*(np.asarray(fields[name], np.float64) for name in GMMPrior._fields))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            "The tree has no readable prior_hyperparameters attribute (a JSON object with "
            f"the fields {', '.join(GMMPrior._fields)}): {err!r}. Build the tree with "
            "bayes_gmm.diagnostics.to_datatree."
        ) from None


def draws_from_datatree(tree: xr.DataTree, group: str = "posterior") -> GMMParams:
    """The parameters of a group as NumPy arrays in :class:`GMMParams`' axis order.

    ``group="posterior"`` gives leading axes (chain, draw); ``group="map"`` none.
    """
    covariance_type = _tree_covariance_type(tree)
    if group not in tree.children:
        raise ValueError(f"The tree has no {group!r} group; it has {sorted(tree.children)}.")
    ds = tree[group].to_dataset()
    lead = SAMPLE_DIMS if group == "posterior" else ()
    dims = dict(PARAMETER_DIMS, covariances=COVARIANCE_DIMS[covariance_type])
    return GMMParams(*(ds[name].transpose(*lead, *dims[name]).values for name in PARAMETER_NAMES))


# --------------------------------------------------------------------------------------
# Saving and loading


def save_datatree(tree: xr.DataTree, path) -> Path:
    """Write ``tree`` to ``path`` as netCDF4 (HDF5, engine h5netcdf), atomically.

    The file is written under a temporary name in the same folder and then renamed over
    ``path`` (``os.replace``), so a reader never sees a half-written file and an
    interrupted write leaves any previous file intact.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"Cannot save the posterior to {str(path)!r}: the folder {str(path.parent)!r} "
            "does not exist. Create it first."
        )
    _require_h5py("save")
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tree.to_netcdf(temporary, engine="h5netcdf")
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def load_datatree(path) -> xr.DataTree:
    """Read a tree written by :func:`save_datatree`, fully into memory.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    OSError
        The file is not a readable netCDF4/HDF5 file (truncated, corrupt, another format).
    ValueError
        The file is netCDF but not a bayes_gmm posterior (no ``posterior`` group or no
        ``covariance_type`` attribute).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No posterior file at {str(path)!r}. Check the path; files are written by "
            "bayes_gmm.diagnostics.save_datatree."
        )
    with open(path, "rb") as file:
        signature = file.read(len(HDF5_SIGNATURE))
    if signature != HDF5_SIGNATURE:
        raise OSError(
            f"Cannot read the posterior file {str(path)!r}: it is not a netCDF4/HDF5 file "
            "(its first bytes are not the HDF5 signature). It may be empty, truncated at the "
            "start, or another kind of file; write it again with "
            "bayes_gmm.diagnostics.save_datatree."
        )
    _require_h5py("load")
    try:
        tree = xr.load_datatree(path, engine="h5netcdf")
    except Exception as err:  # h5py raises OSError, xarray ValueError/KeyError: all mean one thing
        raise OSError(
            f"Cannot read the posterior file {str(path)!r}: it is not a complete "
            f"netCDF4/HDF5 file ({type(err).__name__}: {err}). It may be truncated by an "
            "interrupted copy or be another kind of file; write it again with "
            "bayes_gmm.diagnostics.save_datatree."
        ) from err
    if "posterior" not in tree.children or "covariance_type" not in tree.attrs:
        raise ValueError(
            f"{str(path)!r} is a netCDF file but not a bayes_gmm posterior: expected a "
            "'posterior' group and a 'covariance_type' attribute; found groups "
            f"{sorted(tree.children)}."
        )
    return tree


def _require_h5py(action):
    try:
        import h5py  # noqa: F401
    except ImportError:
        raise ImportError(
            f"To {action} posterior files, h5netcdf needs its HDF5 backend h5py, which is "
            "not installed. Install it: pip install 'h5netcdf[h5py]' (or pip install h5py)."
        ) from None


# --------------------------------------------------------------------------------------
# Label switching


def align_to_pivot(draws: GMMParams, pivot: GMMParams, covariance_type: str):
    r"""Relabel every draw so that its components match the pivot's (the MAP's).

    For each draw, the permutation :math:`s` of labels minimises the Kullback-Leibler
    divergence between the *complete-data* distributions, the joint law of a point and
    its label, under the draw and under the relabelled pivot:

    .. math::
        \mathrm{KL}\big(p_\theta(z, x) \,\|\, p_{\theta_0}(s(z), x)\big)
        = \sum_j w_j \Big[\log\frac{w_j}{w^0_{s(j)}}
          + \mathrm{KL}\big(\mathcal N(\mu_j, \Sigma_j) \,\|\,
                            \mathcal N(\mu^0_{s(j)}, \Sigma^0_{s(j)})\big)\Big].

    The sum separates over components, so the best permutation solves a linear
    assignment problem (``scipy.optimize.linear_sum_assignment``) on the K x K cost
    ``c[j, k] = w_j [KL(N_j || N0_k) - log w0_k]`` (terms that depend on j alone are
    dropped). Why this cost: it is a divergence between distributions, so it is
    invariant to affine changes of the data units and needs no tuning weights between
    means, covariances and weights; its mean term is the squared Mahalanobis distance of
    the draw's mean under the pivot component's covariance, its covariance term
    ``tr(S0^-1 S) - log|S0^-1 S|`` separates components that share a location, and the
    weight term separates components that differ only in size; each component counts in
    proportion to its weight, so an almost empty component (whose label the data cannot
    identify) cannot pull the labels of the others. Only the pivot's covariances are
    factorised (once); the draws' are used as they are.

    Parameters
    ----------
    draws : GMMParams
        Leading axes (chain, draw); shapes as in :func:`to_datatree`.
    pivot : GMMParams
        One parameter set (the MAP), shapes (K,), (K, D) and the covariance type's.
        Components of zero weight (dead) are given weight ``tiny`` in the cost.
    covariance_type : {"full", "tied", "diag", "spherical"}
        Tied covariances are shared and never permuted.

    Returns
    -------
    aligned : GMMParams
        NumPy arrays of the draws' dtypes, with
        ``aligned.means[c, s, k] = draws.means[c, s, permutations[c, s, k]]`` (and
        likewise weights and, unless tied, covariances).
    permutations : ndarray of int64, shape (C, S, K)
        For every draw, the draw's component that takes pivot label k. The fraction of
        draws relabelled is :func:`relabelled_fraction` of it.
    """
    covariance_type = check_covariance_type(covariance_type)
    draws = _check_draws(draws, covariance_type)
    n_chains, n_draws, n_components = draws.weights.shape
    n_features = draws.means.shape[-1]
    pivot = _check_params(pivot, covariance_type, n_components, n_features, "pivot")
    factors = _pivot_factors(pivot, covariance_type)

    n = n_chains * n_draws
    flat = [np.reshape(a, (n, *a.shape[2:])) for a in draws]
    permutations = np.empty((n, n_components), np.int64)
    for start in range(0, n, ALIGN_BLOCK):
        block = slice(start, min(start + ALIGN_BLOCK, n))
        cost = _alignment_cost(*(a[block] for a in flat), factors, covariance_type)
        bad = ~np.all(np.isfinite(cost), axis=(1, 2))
        if np.any(bad):
            chain, draw = divmod(start + int(np.argmax(bad)), n_draws)
            raise ValueError(
                f"The alignment cost of draw (chain={chain}, draw={draw}) is not finite: "
                "its weights, means or covariances contain NaN or inf, or a covariance "
                "is not positive definite. Check the sampler's output."
            )
        for i, c in enumerate(cost):
            # Rows of c.T are pivot labels, so the column index is the draw's component.
            permutations[start + i] = linear_sum_assignment(c.T)[1]
    permutations = permutations.reshape(n_chains, n_draws, n_components)
    return permute_components(draws, permutations, covariance_type), permutations


def permute_components(draws: GMMParams, permutations, covariance_type: str) -> GMMParams:
    """``draws`` with component k of every draw taken from ``permutations[..., k]``."""
    permutations = np.asarray(permutations)
    weights, means, covariances = (np.asarray(a) for a in draws)
    weights = np.take_along_axis(weights, permutations, axis=-1)
    means = np.take_along_axis(means, permutations[..., None], axis=-2)
    if covariance_type == "full":
        covariances = np.take_along_axis(covariances, permutations[..., None, None], axis=-3)
    elif covariance_type == "diag":
        covariances = np.take_along_axis(covariances, permutations[..., None], axis=-2)
    elif covariance_type == "spherical":
        covariances = np.take_along_axis(covariances, permutations, axis=-1)
    return GMMParams(weights, means, covariances)


def relabelled_fraction(permutations) -> float:
    """The fraction of draws whose permutation is not the identity."""
    permutations = np.asarray(permutations)
    identity = np.arange(permutations.shape[-1])
    return float(np.mean(np.any(permutations != identity, axis=-1)))


def align_datatree(tree: xr.DataTree, pivot=None) -> xr.DataTree:
    """A copy of ``tree`` whose posterior draws are aligned to ``pivot``.

    Parameters
    ----------
    tree : xarray.DataTree
        From :func:`to_datatree`, aligned or not.
    pivot : GMMParams or fitted BayesianGMM, optional
        Default: the tree's ``map`` group.

    Returns
    -------
    xarray.DataTree
        ``posterior`` and the per-component ``log_prior`` variables permuted;
        ``sample_stats.label_permutation`` maps the stored components to the draws as
        the sampler produced them (composed with any earlier alignment); root attributes
        ``aligned = 1``, ``alignment_pivot`` (``"map"`` or ``"given"``),
        ``alignment_cost`` and ``relabelled_fraction``, the fraction of draws stored
        under labels other than the sampler's (from the composed permutation).
    """
    covariance_type = _tree_covariance_type(tree)
    draws = draws_from_datatree(tree)
    n_chains, n_draws, n_components = draws.weights.shape
    n_features = draws.means.shape[-1]
    if pivot is None:
        if "map" not in tree.children:
            raise ValueError(
                "The tree has no 'map' group to align to; pass pivot=, e.g. the MAP "
                "estimate as a GMMParams or a fitted BayesianGMM."
            )
        pivot, pivot_name = draws_from_datatree(tree, "map"), "map"
    else:
        pivot = _params_of(pivot, covariance_type, n_components, n_features, "pivot")
        pivot_name = "map" if _is_tree_map(tree, pivot) else "given"
    aligned, permutations = align_to_pivot(draws, pivot, covariance_type)

    posterior = tree["posterior"].to_dataset(inherit=False)
    for name, value in zip(PARAMETER_NAMES, aligned, strict=True):
        posterior[name] = posterior[name].copy(data=_in_dim_order(value, posterior[name],
                                                                  covariance_type, name))
    replace = {"posterior": posterior}

    if "log_prior" in tree.children:
        log_prior = tree["log_prior"].to_dataset(inherit=False)
        for name, da in log_prior.data_vars.items():
            if "component" in da.dims:
                values = da.transpose(*SAMPLE_DIMS, "component").values
                permuted = np.take_along_axis(values, permutations, axis=-1)
                log_prior[name] = (SAMPLE_DIMS + ("component",), permuted, da.attrs)
        replace["log_prior"] = log_prior

    stats = tree["sample_stats"].to_dataset(inherit=False)
    total = permutations
    if "label_permutation" in stats:
        earlier = stats["label_permutation"].transpose(*SAMPLE_DIMS, "component").values
        total = np.take_along_axis(earlier, permutations, axis=-1)
    stats["label_permutation"] = (SAMPLE_DIMS + ("component",), total.astype(np.int64))
    replace["sample_stats"] = stats

    attrs = dict(tree.attrs)
    attrs.update(_alignment_attrs(total, pivot_name))
    return _rebuild(tree, replace, attrs)


def label_invariant_summaries(tree: xr.DataTree, *, weight_threshold=None) -> xr.Dataset:
    """Per-draw quantities that do not depend on the component labels.

    Parameters
    ----------
    tree : xarray.DataTree
        From :func:`to_datatree`.
    weight_threshold : float, optional
        A component counts as occupied when its weight exceeds this. Default ``1 / N``
        for N observations: the component is expected to hold at least one point. Not
        used when the sampler reported ``occupied`` (Gibbs: components holding at least
        one allocated point), which is taken as it is.

    Returns
    -------
    xarray.Dataset
        ``lp`` and ``log_likelihood`` (chain, draw); ``sorted_weights`` (chain, draw,
        weight_rank), largest first; ``n_occupied`` (chain, draw), int.
    """
    posterior = tree["posterior"].to_dataset()
    stats = tree["sample_stats"].to_dataset()
    weights = posterior["weights"].transpose(*SAMPLE_DIMS, "component").values
    n_components = weights.shape[-1]
    if "occupied" in stats:
        n_occupied = stats["occupied"].transpose(*SAMPLE_DIMS).values.astype(np.int64)
    else:
        if weight_threshold is None:
            weight_threshold = 1.0 / tree["observed_data"].to_dataset().sizes["obs_id"]
        n_occupied = np.sum(weights > weight_threshold, axis=-1).astype(np.int64)
    coords = {"chain": posterior["chain"].values, "draw": posterior["draw"].values,
              "weight_rank": np.arange(n_components)}
    if "log_likelihood" in stats:
        log_likelihood = stats["log_likelihood"].transpose(*SAMPLE_DIMS).values
    else:
        log_likelihood = (tree["log_likelihood"]["x"].sum("obs_id", dtype=np.float64)
                          .transpose(*SAMPLE_DIMS).values)
    data = {
        "log_likelihood": (SAMPLE_DIMS, log_likelihood),
        "sorted_weights": (SAMPLE_DIMS + ("weight_rank",), -np.sort(-weights, axis=-1)),
        "n_occupied": (SAMPLE_DIMS, n_occupied),
    }
    if "lp" in stats:
        data["lp"] = (SAMPLE_DIMS, stats["lp"].transpose(*SAMPLE_DIMS).values)
    return xr.Dataset(data, coords=coords)


# --------------------------------------------------------------------------------------
# Tables


def diagnostics_table(tree: xr.DataTree) -> pd.DataFrame:
    """R-hat, bulk ESS and tail ESS of every scalar parameter, after label alignment.

    Rows: ``weights[k]``, ``means[k, d]``, ``covariances[k, d, e]`` (upper triangle only
    for the symmetric full and tied matrices), then the label-invariant ``lp``,
    ``log_likelihood`` and ``sorted_weights[r]`` (the weights sorted largest first, rank
    r). The tree is aligned to its ``map`` group first unless it already is (a tree
    without a ``map`` group is used as it is). Statistics are arviz_stats':
    rank-normalised split R-hat (Vehtari et al., 2021) and its bulk and tail ESS.

    Returns
    -------
    pandas.DataFrame
        Columns ``r_hat``, ``ess_bulk``, ``ess_tail``. ``DataFrame.attrs`` holds run-level
        facts: ``n_chains``, ``n_draws``, ``n_divergences`` (None without a
        ``diverging`` statistic), ``sampling_time`` (None unless in the tree's
        attributes), ``method``, ``aligned`` and ``relabelled_fraction``.

    References
    ----------
    Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Buerkner, P.-C. (2021).
    Rank-normalization, folding, and localization: an improved R-hat for assessing
    convergence of MCMC. Bayesian Analysis 16, 667-718.
    """
    covariance_type = _tree_covariance_type(tree)
    if not tree.attrs.get("aligned", 0) and "map" in tree.children:
        tree = align_datatree(tree)
    values, labels = _flatten_parameters(tree["posterior"].to_dataset(), covariance_type,
                                         SAMPLE_DIMS)
    stats = tree["sample_stats"].to_dataset()
    for name in COMPUTED_STATS:
        if name in stats:
            values = np.concatenate(
                [values, stats[name].transpose(*SAMPLE_DIMS).values[..., None]], axis=-1)
            labels.append(name)
    # Sorted weights need no alignment: their R-hat and ESS check mixing independently of
    # how well the relabelling worked.
    weights = tree["posterior"]["weights"].transpose(*SAMPLE_DIMS, "component").values
    values = np.concatenate([values, -np.sort(-weights, axis=-1)], axis=-1)
    labels += [f"sorted_weights[{rank}]" for rank in range(weights.shape[-1])]
    da = _parameter_array(values, labels)
    table = pd.DataFrame(
        {
            "r_hat": da.azstats.rhat(sample_dims=list(SAMPLE_DIMS)).values,
            "ess_bulk": da.azstats.ess(sample_dims=list(SAMPLE_DIMS), method="bulk").values,
            "ess_tail": da.azstats.ess(sample_dims=list(SAMPLE_DIMS), method="tail").values,
        },
        index=pd.Index(labels, name="parameter"),
    )
    n_divergences = None
    if "diverging" in stats:
        n_divergences = int(np.sum(stats["diverging"].values))
    sampling_time = tree.attrs.get("sampling_time", tree["posterior"].attrs.get("sampling_time"))
    table.attrs = {
        "n_chains": int(values.shape[0]),
        "n_draws": int(values.shape[1]),
        "n_divergences": n_divergences,
        "sampling_time": None if sampling_time is None else float(sampling_time),
        "method": tree.attrs.get("method"),
        "aligned": bool(tree.attrs.get("aligned", 0)),
        "relabelled_fraction": tree.attrs.get("relabelled_fraction"),
    }
    return table


def compare_map_posterior(map_params, tree: xr.DataTree, hdi_prob: float = 0.89) -> pd.DataFrame:
    """The MAP estimate beside the posterior, one row per scalar parameter.

    Parameters
    ----------
    map_params : GMMParams, fitted BayesianGMM or None
        The MAP estimate; ``None`` takes the tree's ``map`` group.
    tree : xarray.DataTree
        From :func:`to_datatree`. Draws are aligned to ``map_params`` first, unless the
        tree is already aligned to this very estimate.
    hdi_prob : float, default 0.89
        Probability mass of the highest density interval (arviz_stats' ``hdi``, the
        shortest interval between two draws that holds it).

    Returns
    -------
    pandas.DataFrame
        Index ``parameter``: ``weights[k]``, ``means[k, d]``, ``covariances[...]`` (upper
        triangle only for full and tied), then ``lp``, the log posterior density.
        Columns: ``map``; ``mean``, ``sd`` (ddof=1), ``median``, ``hdi_lower``,
        ``hdi_upper`` of the draws; ``map_in_hdi``; ``z = (map - mean) / sd``; ``r_hat``,
        ``ess_bulk``, ``ess_tail``; ``frac_draws_above_map``, only for ``lp``: the
        fraction of draws whose log posterior exceeds the MAP's, which is 0 when the MAP
        is the mode (a positive value means EM stopped short of it or found a lesser
        mode). ``DataFrame.attrs`` holds ``hdi_prob`` and ``relabelled_fraction``.
    """
    if not 0 < hdi_prob < 1:
        raise ValueError(f"hdi_prob must be in (0, 1); got {hdi_prob!r}.")
    covariance_type = _tree_covariance_type(tree)
    posterior = draws_from_datatree(tree)
    n_components, n_features = posterior.means.shape[-2:]
    if map_params is None:
        if "map" not in tree.children:
            raise ValueError("The tree has no 'map' group; pass map_params.")
        map_params = draws_from_datatree(tree, "map")
    else:
        map_params = _params_of(map_params, covariance_type, n_components, n_features,
                                "map_params")
    already = (tree.attrs.get("aligned", 0) and tree.attrs.get("alignment_pivot") == "map"
               and _is_tree_map(tree, map_params))
    if not already:
        tree = align_datatree(tree, map_params)

    values, labels = _flatten_parameters(tree["posterior"].to_dataset(), covariance_type,
                                         SAMPLE_DIMS)
    coords = {name: c.values for name, c in tree["posterior"].to_dataset().coords.items()}
    map_ds = _params_dataset(map_params, covariance_type, coords, (), {})
    map_values, _ = _flatten_parameters(map_ds, covariance_type, ())

    x = tree["observed_data"]["x"].transpose("obs_id", "feature").values
    map_lp, _ = _map_log_densities(x, map_params, prior_from_datatree(tree), covariance_type)
    lp = tree["sample_stats"]["lp"].transpose(*SAMPLE_DIMS).values
    values = np.concatenate([values, lp[..., None]], axis=-1)
    map_values = np.append(map_values, map_lp)
    labels.append("lp")

    da = _parameter_array(values, labels)
    dims = list(SAMPLE_DIMS)
    hdi = da.azstats.hdi(prob=hdi_prob, dim=dims)
    table = pd.DataFrame(
        {
            "map": map_values,
            "mean": da.azstats.mean(dim=dims).values,
            "sd": da.azstats.std(dim=dims).values,
            "median": da.azstats.median(dim=dims).values,
            "hdi_lower": hdi.sel(ci_bound="lower").values,
            "hdi_upper": hdi.sel(ci_bound="upper").values,
        },
        index=pd.Index(labels, name="parameter"),
    )
    inside = (table["hdi_lower"] <= table["map"]) & (table["map"] <= table["hdi_upper"])
    table["map_in_hdi"] = inside
    with np.errstate(divide="ignore", invalid="ignore"):
        table["z"] = (table["map"] - table["mean"]) / table["sd"]
    table["r_hat"] = da.azstats.rhat(sample_dims=dims).values
    table["ess_bulk"] = da.azstats.ess(sample_dims=dims, method="bulk").values
    table["ess_tail"] = da.azstats.ess(sample_dims=dims, method="tail").values
    above = np.full(len(labels), np.nan)
    above[-1] = float(np.mean(lp > map_lp))
    table["frac_draws_above_map"] = above
    table.attrs = {"hdi_prob": float(hdi_prob),
                   "relabelled_fraction": tree.attrs.get("relabelled_fraction")}
    return table


# --------------------------------------------------------------------------------------
# Log densities


@partial(jax.jit, static_argnames=("covariance_type",))
def _block_log_densities(x, params: GMMParams, prior: GMMPrior, covariance_type: str):
    """Per-point log likelihood (B, N) and per-site log prior of a block of B draws.

    The log prior comes from the NumPyro model itself (a trace with the draw substituted
    for the sample sites), so that it is, term by term, the density the samplers target.
    With ``x=None`` the model's observation site is a one-point prior predictive draw
    whose value is ignored.
    """

    def one_draw(p):
        log_density = e_step(x, p, covariance_type)[1]
        model = handlers.seed(handlers.substitute(gmm_model, data=init_values(p)), rng_seed=0)
        trace = handlers.trace(model).get_trace(None, prior, covariance_type)
        sites = {name: trace[name]["fn"].log_prob(trace[name]["value"])
                 for name in PARAMETER_NAMES}
        return log_density, sites

    return jax.vmap(one_draw)(params)


def _draw_log_densities(x, draws: GMMParams, prior: GMMPrior, covariance_type: str,
                        keep_pointwise: bool = True):
    """Evaluate :func:`_block_log_densities` over n draws (leading axis n) in blocks.

    Returns the pointwise log likelihood (n, N) (None unless ``keep_pointwise``), its
    float64 totals (n,) and the per-site log priors. The last block is padded with copies
    of the last draw, so that every block has one shape and the function compiles once.
    """
    n = draws.weights.shape[0]
    n_samples = x.shape[0]
    n_components = draws.weights.shape[-1]
    per_draw = _E_STEP_ELEMENTS + n_samples * (n_components + 1)
    block = max(1, min(n, DRAW_BLOCK_ELEMENTS // per_draw))
    dtype = _jax_dtype(x)
    # Converted in NumPy and put on the device: an eager conversion compiles a program.
    x_device = jax.device_put(np.asarray(x, dtype))
    prior_device = GMMPrior(*(jax.device_put(np.asarray(a, dtype)) for a in prior))
    pointwise = np.empty((n, n_samples), dtype) if keep_pointwise else None
    totals = np.empty(n, np.float64)
    sites = None
    for start in range(0, n, block):
        index = np.minimum(np.arange(start, start + block), n - 1)
        params = GMMParams(*(jax.device_put(np.asarray(a[index], dtype)) for a in draws))
        log_density, block_sites = jax.device_get(
            _block_log_densities(x_device, params, prior_device, covariance_type))
        stop = min(start + block, n)
        totals[start:stop] = np.sum(log_density[: stop - start], axis=-1, dtype=np.float64)
        if keep_pointwise:
            pointwise[start:stop] = log_density[: stop - start]
        if sites is None:
            sites = {name: np.empty((n, *v.shape[1:]), v.dtype) for name, v in block_sites.items()}
        for name, v in block_sites.items():
            sites[name][start:stop] = v[: stop - start]
    return pointwise, totals, sites


def _map_log_densities(x, params: GMMParams, prior: GMMPrior, covariance_type: str):
    """(log posterior, log likelihood) at one parameter set, as float64 sums.

    The log prior is :func:`bayes_gmm.em.log_prior`, which, unlike a draw's, must allow
    dead components (weight exactly zero when alpha < 1).
    """
    dtype = _jax_dtype(x)
    # Converted in NumPy: eager JAX conversions would each compile a small program.
    log_density, log_prior = _map_terms(
        np.asarray(x, dtype), GMMParams(*(np.asarray(a, dtype) for a in params)),
        GMMPrior(*(np.asarray(a, dtype) for a in prior)), covariance_type)
    log_likelihood = float(np.sum(np.asarray(log_density), dtype=np.float64))
    return log_likelihood + float(log_prior), log_likelihood


def _map_terms_core(x, params, prior, covariance_type):
    return e_step(x, params, covariance_type)[1], em_log_prior(params, prior, covariance_type)


# One program (kept for the next process) rather than an eager op per term of the prior.
_map_terms = program_store.stored_jit(_map_terms_core, (3,))


def _jax_dtype(x):
    """The float dtype JAX computes in for data of x's dtype (float32 unless x64 is on)."""
    return jax.dtypes.canonicalize_dtype(x.dtype)


# --------------------------------------------------------------------------------------
# Alignment cost


def _pivot_factors(pivot: GMMParams, covariance_type: str) -> _Pivot:
    weights, means, covariances = (np.asarray(a, np.float64) for a in pivot)
    n_components, n_features = means.shape
    log_weights = np.log(np.maximum(weights, np.finfo(np.float64).tiny))
    precision = None
    if covariance_type in ("full", "tied"):
        cholesky = np.linalg.cholesky(covariances)
        eye = np.broadcast_to(np.eye(n_features), cholesky.shape)
        whitening = np.linalg.solve(cholesky, eye)  # L^{-1}; tiny D x D systems
        if covariance_type == "full":
            precision = np.einsum("kab,kac->kbc", whitening, whitening)
            half_log_det = np.sum(np.log(np.diagonal(cholesky, axis1=-2, axis2=-1)), -1)
        else:
            half_log_det = np.zeros(n_components)
    elif covariance_type == "diag":
        whitening = 1.0 / covariances
        half_log_det = 0.5 * np.sum(np.log(covariances), -1)
    else:
        whitening = 1.0 / covariances
        half_log_det = 0.5 * n_features * np.log(covariances)
    return _Pivot(log_weights, means, whitening, precision, half_log_det)


def _alignment_cost(weights, means, covariances, pivot: _Pivot, covariance_type):
    """Cost (B, K, K): ``c[b, j, k] = w_j [KL(N_j || N0_k) - log w0_k]`` up to terms in j only.

    ``KL(N_j || N0_k) = 0.5 [tr(S0_k^-1 S_j) + (mu_j - mu0_k)' S0_k^-1 (mu_j - mu0_k)
    + log|S0_k| - log|S_j| - D]``; ``log|S_j|`` and ``D`` do not depend on k and are
    dropped, and for tied covariances the trace and log-determinants are constant too.
    """
    weights = np.asarray(weights, np.float64)
    means = np.asarray(means, np.float64)
    covariances = np.asarray(covariances, np.float64)
    if covariance_type in ("full", "tied"):
        if covariance_type == "full":
            whitened = np.einsum("kab,njb->njka", pivot.whitening, means)
            centres = np.einsum("kab,kb->ka", pivot.whitening, pivot.means)
            trace = np.einsum("kab,njab->njk", pivot.precision, covariances)
        else:
            whitened = np.einsum("ab,njb->nja", pivot.whitening, means)[:, :, None, :]
            centres = pivot.means @ pivot.whitening.T
            trace = 0.0
        mahalanobis = np.sum((whitened - centres[None, None]) ** 2, axis=-1)
    else:
        inverse = pivot.whitening  # 1 / variances: diag (K, D), spherical (K,)
        if covariance_type == "spherical":
            inverse = np.broadcast_to(inverse[:, None], pivot.means.shape)
            covariances = np.broadcast_to(covariances[..., None], means.shape)
        trace = np.einsum("njd,kd->njk", covariances, inverse)
        difference = means[:, :, None, :] - pivot.means[None, None]
        mahalanobis = np.sum(difference**2 * inverse[None, None], axis=-1)
    kl = 0.5 * (trace + mahalanobis) + pivot.half_log_det[None, None, :]
    return weights[:, :, None] * (kl - pivot.log_weights[None, None, :])


# --------------------------------------------------------------------------------------
# Helpers: checks


def _check_x(x) -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n_samples, n_features); got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite; it contains NaN or inf.")
    return x


def _covariance_shape(covariance_type, n_components, n_features):
    return {"full": (n_components, n_features, n_features), "tied": (n_features, n_features),
            "diag": (n_components, n_features), "spherical": (n_components,)}[covariance_type]


def _check_draws(draws, covariance_type, n_features=None) -> GMMParams:
    """Draws as NumPy arrays, their shapes checked against each other (and D)."""
    if not isinstance(draws, GMMParams):
        raise TypeError(f"draws must be a bayes_gmm.GMMParams; got {type(draws).__name__}.")
    weights, means, covariances = (np.asarray(a) for a in jax.device_get(tuple(draws)))
    if weights.ndim != 3:
        raise ValueError(
            "draws.weights must have shape (n_chains, n_draws, n_components); got shape "
            f"{weights.shape}. Add a chain axis of length 1 for a single chain."
        )
    n_chains, n_draws, n_components = weights.shape
    d = means.shape[-1] if means.ndim == 4 else n_features
    expected_means = (n_chains, n_draws, n_components, d if n_features is None else n_features)
    if means.shape != expected_means:
        raise ValueError(
            "draws.means must have shape (n_chains, n_draws, n_components, n_features) = "
            f"{expected_means}; got {means.shape}."
        )
    expected = (n_chains, n_draws) + _covariance_shape(covariance_type, n_components,
                                                       expected_means[-1])
    if covariances.shape != expected:
        raise ValueError(
            f"draws.covariances must have shape {expected} for "
            f"covariance_type={covariance_type!r}; got {covariances.shape}."
        )
    return GMMParams(weights, means, covariances)


def _check_params(params, covariance_type, n_components, n_features, name) -> GMMParams:
    """One parameter set (no chain/draw axes) as NumPy arrays of checked shapes."""
    if not isinstance(params, GMMParams):
        raise TypeError(f"{name} must be a bayes_gmm.GMMParams; got {type(params).__name__}.")
    weights, means, covariances = (np.asarray(a) for a in jax.device_get(tuple(params)))
    expected = ((n_components,), (n_components, n_features),
                _covariance_shape(covariance_type, n_components, n_features))
    got = (weights.shape, means.shape, covariances.shape)
    if got != expected:
        raise ValueError(
            f"{name} must have weights, means and covariances of shapes {expected} (K = "
            f"{n_components}, D = {n_features}, covariance_type={covariance_type!r}); got "
            f"{got}."
        )
    return GMMParams(weights, means, covariances)


def _params_of(estimate, covariance_type, n_components, n_features, name) -> GMMParams:
    """A GMMParams from a GMMParams or a fitted BayesianGMM."""
    if not isinstance(estimate, GMMParams) and hasattr(estimate, "params_"):
        fitted_type = getattr(estimate, "covariance_type", covariance_type)
        if fitted_type != covariance_type:
            raise ValueError(
                f"{name} was fitted with covariance_type={fitted_type!r} but the posterior "
                f"has covariance_type={covariance_type!r}."
            )
        estimate = estimate.params_
    elif not isinstance(estimate, GMMParams):
        raise TypeError(
            f"{name} must be a GMMParams or a fitted BayesianGMM; got {type(estimate).__name__}."
        )
    return _check_params(estimate, covariance_type, n_components, n_features, name)


def _check_prior(prior, covariance_type, n_components, n_features) -> GMMPrior:
    if not isinstance(prior, GMMPrior):
        raise TypeError(f"prior must be a bayes_gmm.GMMPrior; got {type(prior).__name__}.")
    prior = GMMPrior(*(np.asarray(a) for a in prior))
    covariance = {"full": (n_features, n_features), "tied": (n_features, n_features),
                  "diag": (n_features,), "spherical": ()}[covariance_type]
    expected = ((n_components,), (n_features,), (), (), covariance)
    got = tuple(a.shape for a in prior)
    if got != expected:
        raise ValueError(
            f"prior does not match the draws (K = {n_components}, D = {n_features}, "
            f"covariance_type={covariance_type!r}): expected field shapes {expected}, got "
            f"{got}. Pass the prior the posterior was sampled under."
        )
    return prior


def _check_sample_stats(sample_stats, n_chains, n_draws) -> dict:
    stats = {}
    for name, value in (sample_stats or {}).items():
        name = SAMPLE_STAT_NAMES.get(name, name)
        if name in COMPUTED_STATS:
            continue
        value = np.asarray(jax.device_get(value))
        if value.shape != (n_chains, n_draws):
            raise ValueError(
                f"sample_stats[{name!r}] must have shape (n_chains, n_draws) = "
                f"{(n_chains, n_draws)}; got {value.shape}."
            )
        stats[name] = value
    return stats


def _feature_coordinate(feature_names, n_features):
    if feature_names is None:
        return np.arange(n_features)
    names = np.asarray([str(name) for name in feature_names], dtype=object)
    if names.shape != (n_features,) or len(set(names)) != n_features:
        raise ValueError(
            f"feature_names must be {n_features} distinct names, one per column of x; got "
            f"{list(feature_names)!r}."
        )
    return names


def _tree_covariance_type(tree) -> str:
    if not isinstance(tree, xr.DataTree):
        raise TypeError(
            f"Expected an xarray.DataTree from to_datatree or load_datatree; got "
            f"{type(tree).__name__}."
        )
    if "covariance_type" not in tree.attrs or "posterior" not in tree.children:
        raise ValueError(
            "The tree is not a bayes_gmm posterior: it needs a 'posterior' group and a "
            "'covariance_type' attribute. Build it with bayes_gmm.diagnostics.to_datatree."
        )
    return check_covariance_type(str(tree.attrs["covariance_type"]))


def _is_tree_map(tree, params: GMMParams) -> bool:
    """Whether ``params`` equal the tree's ``map`` group (to the stored precision)."""
    if "map" not in tree.children:
        return False
    stored = draws_from_datatree(tree, "map")
    return all(
        a.shape == b.shape and np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                           rtol=1e-6, atol=0)
        for a, b in zip(stored, params, strict=True)
    )


# --------------------------------------------------------------------------------------
# Helpers: building groups


def _in_dim_order(value, da, covariance_type, name):
    """``value`` in GMMParams' axis order, transposed to the dims order of ``da``."""
    dims = SAMPLE_DIMS + (COVARIANCE_DIMS[covariance_type] if name == "covariances"
                          else PARAMETER_DIMS[name])
    return np.transpose(value, [dims.index(d) for d in da.dims])


def _params_dataset(params, covariance_type, coords, lead_dims, attrs) -> xr.Dataset:
    dims = dict(PARAMETER_DIMS, covariances=COVARIANCE_DIMS[covariance_type])
    data = {name: (tuple(lead_dims) + dims[name], np.asarray(value))
            for name, value in zip(PARAMETER_NAMES, params, strict=True)}
    return _dataset(data, coords, attrs)


def _dataset(data, coords, attrs) -> xr.Dataset:
    used = {d for dims, *_ in data.values() for d in dims}
    return xr.Dataset(data, coords={d: coords[d] for d in coords if d in used}, attrs=attrs)


def _map_dataset(x, map_params, map_info, prior, covariance_type, coords) -> xr.Dataset:
    lp, log_likelihood = _map_log_densities(x, map_params, prior, covariance_type)
    ds = _params_dataset(map_params, covariance_type, coords, (), _group_attrs())
    ds["lp"] = ((), np.float64(lp))
    ds["log_likelihood"] = ((), np.float64(log_likelihood))
    info = map_info._asdict() if hasattr(map_info, "_asdict") else dict(map_info or {})
    n_iter = info.get("n_iter")
    for name, value in info.items():
        if name in ds or value is None or isinstance(value, tuple | dict | list):
            continue
        value = np.asarray(jax.device_get(value))
        if value.ndim == 0:
            ds[name] = ((), value)
        elif value.ndim == 1:
            if name == "history" and n_iter is not None:
                ds[name] = (("em_iteration",), value[: int(n_iter) + 1])
            elif name == "init_log_posteriors":
                ds[name] = (("restart",), value)
            elif value.shape[0] == coords["component"].shape[0]:
                ds[name] = (("component",), value)
            else:
                ds[name] = ((f"{name}_dim_0",), value)
    return ds


def _group_attrs() -> dict:
    """ArviZ's standard attributes of a group, naming bayes_gmm as the creator.

    ArviZ's ``sample_dims`` list is left out: attributes here are strings and numbers
    only, the types every netCDF writer stores and reads back unchanged (h5py cannot
    store a NumPy unicode array, which is what a list of str becomes).
    """
    return arviz_base.make_attrs(
        attrs={"creation_library": "bayes_gmm", "creation_library_version": _version()}
    )


def _library_attrs() -> dict:
    return {
        "bayes_gmm_version": _version(),
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "creation_library": "bayes_gmm",
        "arviz_base_version": arviz_base.__version__,
        "jax_version": jax.__version__,
        "jax_enable_x64": int(bool(jax.config.jax_enable_x64)),
    }


def _alignment_attrs(permutations, pivot_name) -> dict:
    return {
        "aligned": 1,
        "alignment_pivot": pivot_name,
        "alignment_cost": ALIGNMENT_COST,
        "relabelled_fraction": relabelled_fraction(permutations),
    }


def _version() -> str:
    try:
        return version("bayes_gmm")
    except PackageNotFoundError:
        return "0+unknown"


def _netcdf_attrs(attrs: dict) -> dict:
    """Attributes in types netCDF stores: bool -> 0/1, dicts and lists of str -> JSON,
    None dropped."""
    out = {}
    for name, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, bool | np.bool_):
            value = int(value)
        elif isinstance(value, dict) or (isinstance(value, list | tuple)
                                         and any(isinstance(v, str) for v in value)):
            value = json.dumps(value, default=str)
        elif isinstance(value, Path):
            value = str(value)
        out[str(name)] = value
    return out


def _prior_to_json(prior: GMMPrior) -> str:
    # tolist() gives Python floats, whose JSON repr round-trips exactly.
    return json.dumps({name: np.asarray(value, np.float64).tolist()
                       for name, value in zip(GMMPrior._fields, prior, strict=True)})


def _rebuild(tree, replace: dict, attrs: dict) -> xr.DataTree:
    groups = {name: tree[name].to_dataset(inherit=False) for name in tree.children}
    groups.update(replace)
    new = xr.DataTree.from_dict(groups)
    new.attrs = attrs
    return new


def _flatten_parameters(ds, covariance_type, lead_dims):
    """Every scalar parameter of ``ds`` on one last axis, float64, with labels.

    Symmetric covariance matrices (full, tied) contribute their upper triangle only.
    Labels follow ArviZ's: ``means[0, 1]``, coordinates as stored.
    """
    dims = dict(PARAMETER_DIMS, covariances=COVARIANCE_DIMS[covariance_type])
    values, labels = [], []
    for name in PARAMETER_NAMES:
        da = ds[name].transpose(*lead_dims, *dims[name])
        shape = da.shape[len(lead_dims):]
        index = list(np.ndindex(*shape))
        if name == "covariances" and covariance_type in ("full", "tied"):
            index = [i for i in index if i[-2] <= i[-1]]
        coordinates = [da[d].values for d in dims[name]]
        labels += [f"{name}[{', '.join(str(c[j]) for c, j in zip(coordinates, i, strict=True))}]"
                   for i in index]
        flat_index = np.ravel_multi_index(tuple(np.array(index).T), shape)
        flat = np.asarray(da.values, np.float64).reshape(*da.shape[: len(lead_dims)], -1)
        values.append(flat[..., flat_index])
    return np.concatenate(values, axis=-1), labels


def _parameter_array(values, labels) -> xr.DataArray:
    return xr.DataArray(values, dims=SAMPLE_DIMS + ("parameter",),
                        coords={"parameter": labels})


__all__ = [
    "align_datatree",
    "align_to_pivot",
    "compare_map_posterior",
    "diagnostics_table",
    "draws_from_datatree",
    "label_invariant_summaries",
    "load_datatree",
    "permute_components",
    "prior_from_datatree",
    "relabelled_fraction",
    "save_datatree",
    "to_datatree",
]
