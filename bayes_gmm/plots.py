"""Figures of mixture fits: what a person looks at after EM has run.

Every function draws on an ``ax`` (or a ``fig``) when given one and otherwise creates a
new figure with pyplot, and returns the :class:`matplotlib.figure.Figure`; none calls
``plt.show``, so the same functions serve notebooks, scripts and the CLI (which passes
axes of bare ``Figure`` objects and never touches pyplot's global state).

The EM picture is the classic one: each point is coloured by its responsibilities, the
per-component colours blended in proportion (a point the model is sure about takes its
component's colour, an undecided one a mixture), and each component is drawn as its mean
and the ellipses one and two standard deviations (Mahalanobis distance 1 and 2) around it.
Covariances of every type are first turned into full matrices
(:func:`as_full_covariances`); with more than two features the picture is the projection
on two of them, and the ellipses are the marginal ones, exactly the projection of the
component's density. One-dimensional data get the density version of the same picture.

The posterior figures read a DataTree of :mod:`bayes_gmm.diagnostics` (draws aligned to
the MAP, so that a component keeps its colour): :func:`map_vs_posterior` draws the MAP's
ellipses bold among those of posterior draws, :func:`forest` the posterior intervals of
every scalar parameter with the MAP marked, and :func:`trace` the draws of each chain.
They are drawn with matplotlib directly (not arviz_plots, whose functions make their own
pyplot figures), so that they too draw on a given bare ``Figure``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse
from matplotlib.ticker import MaxNLocator, NullFormatter

from bayes_gmm.covariance import as_full_covariances
from bayes_gmm.em import e_step
from bayes_gmm.plots_selection import (  # noqa: F401 (re-exported)
    SELECTION_PANELS,
    selection,
    selection_figure,
)
from bayes_gmm.priors import check_covariance_type

# Distances (in standard deviations) of the ellipses drawn around each component, and
# their line styles: the inner one solid, the outer one dashed.
N_STD = (1.0, 2.0)
LINESTYLES = ("-", "--")


def component_colors(n_components: int) -> np.ndarray:
    """One RGB colour per component, shape (K, 3): tab10, then evenly spaced hues."""
    from matplotlib import colormaps

    if n_components <= 10:
        cmap = colormaps["tab10"]
        return np.array([to_rgb(cmap(k)) for k in range(n_components)])
    cmap = colormaps["hsv"]
    return np.array([to_rgb(cmap(k / n_components)) for k in range(n_components)])


def responsibility_scatter(x, resp, ax=None, features=(0, 1), colors=None, size=14.0):
    """Points coloured by their responsibilities.

    Parameters
    ----------
    x : array of shape (n_samples, n_features)
    resp : array of shape (n_samples, n_components)
        Responsibilities (rows sum to one); each point's colour is ``resp @ colors``.
    ax : matplotlib Axes, optional
    features : (int, int), default (0, 1)
        The two columns of ``x`` on the horizontal and vertical axes.
    colors : array of shape (n_components, 3), optional
        RGB per component; by default :func:`component_colors`.
    size : float, default 14.0
        Marker area in points^2.

    Returns
    -------
    Figure
    """
    x = np.asarray(x, dtype=np.float64)
    resp = np.asarray(resp, dtype=np.float64)
    i, j = _check_features(features, x.shape[1])
    colors = component_colors(resp.shape[1]) if colors is None else np.asarray(colors)
    ax = _axes(ax)
    # Rows sum to one up to rounding; clipping keeps the blend a valid RGB colour.
    blended = np.clip(resp @ colors, 0.0, 1.0)
    ax.scatter(x[:, i], x[:, j], c=blended, s=size, linewidths=0, alpha=0.85)
    return ax.figure


def component_ellipses(
    means, covariances, ax=None, features=(0, 1), colors=None, alive=None, n_std=N_STD
):
    """Each component's mean and its ``n_std`` standard-deviation ellipses.

    Parameters
    ----------
    means : array of shape (n_components, n_features)
    covariances : array of shape (n_components, n_features, n_features)
        Full matrices (see :func:`as_full_covariances`).
    ax : matplotlib Axes, optional
    features : (int, int), default (0, 1)
    colors : array of shape (n_components, 3), optional
    alive : array of shape (n_components,) of bool, optional
        Components to draw; by default all. A component with zero weight has left the
        model and is not drawn.
    n_std : sequence of float, default (1, 2)
        Mahalanobis radii of the ellipses; one patch per radius and component.

    Returns
    -------
    Figure
    """
    means = np.asarray(means, dtype=np.float64)
    covariances = np.asarray(covariances, dtype=np.float64)
    k = means.shape[0]
    i, j = _check_features(features, means.shape[1])
    colors = component_colors(k) if colors is None else np.asarray(colors)
    alive = np.ones(k, bool) if alive is None else np.asarray(alive, bool)
    ax = _axes(ax)
    axes_sd, angles = _ellipse_geometry(covariances, (i, j))
    for c in range(k):
        if not alive[c]:
            continue
        for r, radius in enumerate(n_std):
            ax.add_patch(
                Ellipse(
                    (means[c, i], means[c, j]),
                    width=2 * radius * axes_sd[c, 1],
                    height=2 * radius * axes_sd[c, 0],
                    angle=angles[c],
                    fill=False,
                    edgecolor=colors[c],
                    linestyle=LINESTYLES[r % len(LINESTYLES)],
                    linewidth=2.0 if r == 0 else 1.3,
                )
            )
        ax.plot(
            means[c, i], means[c, j], marker="X", markersize=10, color=colors[c],
            markeredgecolor="black", linestyle="none",
        )
    return ax.figure


def em_iteration(
    x, params, covariance_type, ax=None, iteration=None, log_posterior=None, features=(0, 1),
    feature_names=None,
):
    """One EM state: points coloured by responsibility, component ellipses and means.

    Parameters
    ----------
    x : array of shape (n_samples, n_features)
    params : GMMParams
        weights (K,), means (K, D), covariances in the shape of ``covariance_type``.
    covariance_type : {"full", "tied", "diag", "spherical"}
    ax : matplotlib Axes, optional
    iteration : int, optional
        Shown in the title.
    log_posterior : float, optional
        Shown in the title.
    features : (int, int), default (0, 1)
        The two columns shown when D >= 2 (ignored for D = 1).
    feature_names : sequence of str, optional
        Names of all D columns, for the axis labels; by default "feature 0", ...

    Returns
    -------
    Figure
        With D >= 2, the axes hold exactly two ellipse patches per live component. With
        D = 1, a histogram of the data, each weighted component density and their sum,
        and the points along the bottom coloured by responsibility.
    """
    check_covariance_type(covariance_type)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n_samples, n_features); got shape {x.shape}.")
    weights = np.asarray(params.weights, dtype=np.float64)
    means = np.asarray(params.means, dtype=np.float64)
    k, d = means.shape
    if x.shape[1] != d:
        raise ValueError(
            f"x has {x.shape[1]} features but params.means has {d}; pass the data the "
            "parameters were fitted to."
        )
    covariances = as_full_covariances(params.covariances, covariance_type, k, d)
    resp = np.exp(np.asarray(e_step(jnp.asarray(x), params, covariance_type)[0], np.float64))
    colors = component_colors(k)
    alive = weights > 0
    names = [f"feature {j}" for j in range(d)] if feature_names is None else feature_names
    ax = _axes(ax)

    if d == 1:
        _one_dimensional(ax, x[:, 0], resp, weights, means[:, 0], covariances[:, 0, 0], colors)
        ax.set_xlabel(names[0])
    else:
        responsibility_scatter(x, resp, ax=ax, features=features, colors=colors)
        component_ellipses(means, covariances, ax=ax, features=features, colors=colors,
                           alive=alive)
        i, j = _check_features(features, d)
        _set_limits(ax, x[:, i], x[:, j])
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
    handles = [
        Line2D([], [], color=colors[c], marker="X", markeredgecolor="black", linestyle="-",
               label=f"component {c + 1}: weight {weights[c]:.2f}" if alive[c]
               else f"component {c + 1}: empty")
        for c in range(k)
    ]
    ax.legend(handles=handles, loc="best", fontsize="small", framealpha=0.8)
    ax.set_title(_title(iteration, log_posterior))
    return ax.figure


def em_iterations_grid(
    x, params_history, covariance_type, iterations=None, log_posteriors=None,
    features=(0, 1), ncols=4, fig=None, feature_names=None,
):
    """Small multiples of :func:`em_iteration`, one panel per chosen iteration.

    Parameters
    ----------
    x : array of shape (n_samples, n_features)
    params_history : GMMParams
        Each field with a leading axis over iterations (e.g. the estimator's
        ``params_history_``).
    covariance_type : {"full", "tied", "diag", "spherical"}
    iterations : sequence of int, optional
        Which iterations to show; by default all of them.
    log_posteriors : array of shape (n_iterations,), optional
        Log posterior per iteration, shown in each panel's title.
    features : (int, int), default (0, 1)
    ncols : int, default 4
    feature_names : sequence of str, optional
    fig : matplotlib Figure, optional
        An empty figure to draw on (give it ``layout="constrained"`` to keep the panels'
        labels apart); by default a new pyplot figure.

    Returns
    -------
    Figure
    """
    n_total = np.asarray(params_history.weights).shape[0]
    iterations = list(range(n_total)) if iterations is None else [int(t) for t in iterations]
    bad = [t for t in iterations if not 0 <= t < n_total]
    if bad:
        raise ValueError(
            f"iterations must lie in [0, {n_total - 1}] (params_history has {n_total} "
            f"entries); got {bad}."
        )
    ncols = max(1, min(int(ncols), len(iterations)))
    nrows = -(-len(iterations) // ncols)
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(3.6 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for panel, ax in enumerate(axes.flat):
        if panel >= len(iterations):
            ax.set_axis_off()
            continue
        t = iterations[panel]
        params = type(params_history)(*(np.asarray(a)[t] for a in params_history))
        lp = None if log_posteriors is None else float(np.asarray(log_posteriors)[t])
        em_iteration(x, params, covariance_type, ax=ax, iteration=t, log_posterior=lp,
                     features=features, feature_names=feature_names)
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()
        ax.title.set_fontsize("small")
    return fig


def log_posterior_trace(history, ax=None, converged=None):
    """The log posterior after each EM iteration.

    Parameters
    ----------
    history : array of shape (n_iterations,)
        Iteration 0 is the starting point. Trailing NaN (the unused end of the core's
        fixed-size buffer) are dropped.
    ax : matplotlib Axes, optional
    converged : bool, optional
        Shown in the title when given.

    Returns
    -------
    Figure
    """
    history = np.asarray(history, dtype=np.float64).reshape(-1)
    finite = np.isfinite(history)
    n = int(np.max(np.nonzero(finite)[0]) + 1) if finite.any() else 0
    ax = _axes(ax)
    ax.plot(np.arange(n), history[:n], marker="o", markersize=4, color="black")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("log posterior  log p(x | θ) + log p(θ)")
    title = f"Log posterior over {max(n - 1, 0)} EM iterations"
    if n:
        title += f": {history[n - 1]:.3f}"
    if converged is not None:
        title += " (converged)" if converged else " (not converged)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return ax.figure


# --------------------------------------------------------------------------------------
# The posterior beside the MAP


def map_vs_posterior(gmm, tree, X=None, ax=None, n_draws=50, features=(0, 1), n_std=N_STD):
    """The data, the MAP's component ellipses (bold) and those of posterior draws (thin).

    Each component keeps one colour: its MAP ellipses are drawn bold, the same ellipses of
    ``n_draws`` posterior draws thin and transparent around them, so the spread of the
    thin ones shows how well the data pin down each component's location and shape.
    The draws must carry the MAP's labels (label switching would mix the colours): a tree
    from :meth:`bayes_gmm.BayesianGMM.sample_posterior` is aligned already, an unaligned
    one is aligned here to the MAP first.

    Parameters
    ----------
    gmm : fitted BayesianGMM, GMMParams or None
        The MAP estimate; ``None`` takes the tree's ``map`` group.
    tree : xarray.DataTree
        Posterior draws in the layout of :func:`bayes_gmm.diagnostics.to_datatree`.
    X : array of shape (n_samples, n_features), optional
        The data; by default the tree's ``observed_data``.
    ax : matplotlib Axes, optional
    n_draws : int, default 50
        Draws shown, evenly spaced over all chains and draws (all of them if fewer).
    features : (int, int), default (0, 1)
        The two columns shown when D >= 2 (ignored for D = 1).
    n_std : sequence of float, default (1, 2)
        Mahalanobis radii of the ellipses, for the MAP and the draws alike.

    Returns
    -------
    Figure
        With D >= 2: ellipse patches with gid ``"map"`` (``len(n_std)`` per live MAP
        component) and ``"draw"`` (``len(n_std)`` per component and shown draw). With
        D = 1: a histogram of the data, the MAP's weighted component densities (bold) and
        their sum (dashed), and each shown draw's weighted component densities (thin).

    Examples
    --------
    >>> idata = gmm.sample_posterior(X, method="gibbs")          # doctest: +SKIP
    >>> bayes_gmm.plots.map_vs_posterior(gmm, idata, X)          # doctest: +SKIP
    """
    from bayes_gmm import diagnostics

    covariance_type = _tree_covariance_type(tree)
    map_params = _map_params(gmm, tree, covariance_type)
    if not int(tree.attrs.get("aligned", 0)):
        tree = diagnostics.align_datatree(tree, map_params)
    draws = diagnostics.draws_from_datatree(tree)
    n_chains, n_total, k = draws.weights.shape
    d = draws.means.shape[-1]
    x = _data_of(tree, X, d)
    n_draws = int(n_draws)
    if n_draws < 1:
        raise ValueError(f"n_draws must be an integer >= 1; got {n_draws}.")
    flat = [np.asarray(a, np.float64).reshape(n_chains * n_total, *a.shape[2:]) for a in draws]
    index = np.unique(np.round(np.linspace(0, len(flat[0]) - 1,
                                           min(n_draws, len(flat[0])))).astype(int))
    weights, means, covariances = (a[index] for a in flat)
    covariances = np.stack([as_full_covariances(c, covariance_type, k, d) for c in covariances])
    map_weights = np.asarray(map_params.weights, np.float64)
    map_means = np.asarray(map_params.means, np.float64)
    map_covariances = as_full_covariances(map_params.covariances, covariance_type, k, d)
    colors = component_colors(k)
    alive = map_weights > 0
    names = _feature_names(tree, d)
    ax = _axes(ax)

    if d == 1:
        _one_dimensional_posterior(ax, x[:, 0], map_weights, map_means[:, 0],
                                   map_covariances[:, 0, 0], weights, means[..., 0],
                                   covariances[..., 0, 0], colors)
        ax.set_xlabel(names[0])
    else:
        i, j = _check_features(features, d)
        ax.scatter(x[:, i], x[:, j], s=8.0, color="0.55", linewidths=0, alpha=0.7)
        axes_sd, angles = _ellipse_geometry(covariances.reshape(-1, d, d), (i, j))
        axes_sd = axes_sd.reshape(len(index), k, 2)
        angles = angles.reshape(len(index), k)
        for s in range(len(index)):
            for c in range(k):
                for radius in n_std:
                    ax.add_patch(Ellipse(
                        (means[s, c, i], means[s, c, j]), width=2 * radius * axes_sd[s, c, 1],
                        height=2 * radius * axes_sd[s, c, 0], angle=angles[s, c], fill=False,
                        edgecolor=colors[c], linewidth=0.6, alpha=0.18, gid="draw",
                    ))
        before = len(ax.patches)
        component_ellipses(map_means, map_covariances, ax=ax, features=(i, j), colors=colors,
                           alive=alive, n_std=n_std)
        for patch in ax.patches[before:]:
            patch.set_gid("map")
            patch.set_linewidth(2.6)
        _set_limits(ax, x[:, i], x[:, j])
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
    handles = [
        Line2D([], [], color=colors[c], linewidth=2.6,
               label=f"component {c + 1}: MAP weight {map_weights[c]:.2f}" if alive[c]
               else f"component {c + 1}: empty at the MAP")
        for c in range(k)
    ] + [
        Line2D([], [], color="0.3", linewidth=2.6, label="MAP"),
        Line2D([], [], color="0.3", linewidth=0.6, alpha=0.5,
               label=f"{len(index)} posterior draws"),
    ]
    ax.legend(handles=handles, loc="best", fontsize="small", framealpha=0.8)
    method = tree.attrs.get("method", "posterior")
    ax.set_title(f"MAP (bold) and {len(index)} draws of the posterior ({method})")
    return ax.figure


# Kinds of scalar parameters in comparison tables, in the order of the forest's panels.
FOREST_KINDS = ("weights", "means", "covariances", "lp")
FOREST_TITLES = {"weights": "weights", "means": "means", "covariances": "covariances",
                 "lp": "log posterior lp (the MAP is its mode: above the draws)"}


def forest(comparison, *, fig=None, standardize=True, include_lp=True, annotate=True):
    """Posterior HDIs and medians of every scalar parameter, with the MAP marked.

    One panel per kind of parameter (weights, means, covariances, and the log posterior
    ``lp``), one row per scalar. Several tables (e.g. NUTS, Gibbs, Laplace on one model)
    are drawn side by side in each row, each in its colour.

    Parameters
    ----------
    comparison : pandas.DataFrame, mapping of str to DataFrame, or xarray.DataTree
        A table of :func:`bayes_gmm.compare_map_posterior` (columns ``map``, ``mean``,
        ``sd``, ``median``, ``hdi_lower``, ``hdi_upper``), several keyed by a name (the
        first is the reference), or a posterior tree, compared with its own ``map`` group.
    fig : matplotlib Figure, optional
        An empty figure to draw on; by default a new pyplot figure sized to the rows.
    standardize : bool, default True
        Show every row as ``(value - mean) / sd`` of the reference posterior, so that
        rows of different scales (a weight, a mean in minutes, a variance in minutes^2)
        are read on one axis: the HDI's width and skew, and how many posterior standard
        deviations the MAP sits from the mean. With False, natural units (readable when
        the features share a scale).
    include_lp : bool, default True
        Add the panel of ``lp``, the log posterior density.
    annotate : bool, default True
        Write the MAP and the reference HDI in natural units at the right of each row.

    Returns
    -------
    Figure
        Axes titled by kind; per row and table a horizontal HDI line (gid ``"hdi"``) and
        a median dot; the MAP as a black diamond (gid ``"map"``).
    """
    tables = _comparison_tables(comparison)
    reference = next(iter(tables.values()))
    hdi_prob = reference.attrs.get("hdi_prob")
    kinds = {}
    for label in reference.index:
        kind = str(label).split("[", 1)[0]
        if kind == "lp" and not include_lp:
            continue
        if kind in ("log_likelihood",):
            continue
        kinds.setdefault(kind, []).append(label)
    order = [k for k in FOREST_KINDS if k in kinds] + [k for k in kinds if k not in FOREST_KINDS]
    if not order:
        raise ValueError("comparison has no parameter rows to draw.")
    scale = reference["sd"].to_numpy(np.float64)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    centre = reference["mean"].to_numpy(np.float64)
    position = {label: n for n, label in enumerate(reference.index)}

    def transform(values, label):
        if not standardize:
            return values
        n = position[label]
        return (np.asarray(values, np.float64) - centre[n]) / scale[n]

    rows = [len(kinds[kind]) for kind in order]
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=_forest_size(sum(rows), len(order)), layout="constrained")
    axes = fig.subplots(len(order), 1, squeeze=False,
                        gridspec_kw={"height_ratios": [r + 1.2 for r in rows]})[:, 0]
    colors = [f"C{n % 10}" for n in range(len(tables))]
    spread = 0.5 / max(len(tables), 1)
    for ax, kind in zip(axes, order, strict=True):
        labels = kinds[kind]
        for row, label in enumerate(labels):
            y = len(labels) - 1 - row
            for n, (table, color) in enumerate(zip(tables.values(), colors, strict=True)):
                if label not in table.index:
                    continue
                offset = (n - (len(tables) - 1) / 2) * spread
                low, high, median = transform(
                    table.loc[label, ["hdi_lower", "hdi_upper", "median"]].to_numpy(np.float64),
                    label)
                ax.plot([low, high], [y + offset] * 2, color=color, linewidth=2.2,
                        solid_capstyle="butt", gid="hdi")
                ax.plot(median, y + offset, "o", color=color, markersize=4.5)
            map_value = transform(reference.loc[label, "map"], label)
            ax.plot(map_value, y, "D", color="black", markersize=5.5, gid="map", zorder=3)
            if annotate:
                low, high = reference.loc[label, ["hdi_lower", "hdi_upper"]]
                ax.annotate(
                    f"MAP {_number(reference.loc[label, 'map'])}   "
                    f"HDI {_number(low)} to {_number(high)}",
                    xy=(1.01, y), xycoords=("axes fraction", "data"), va="center",
                    fontsize="x-small", color="0.25",
                )
        ax.set_yticks(range(len(labels)), labels[::-1], fontsize="small")
        ax.set_ylim(-0.7, len(labels) - 0.3)
        ax.set_title(FOREST_TITLES.get(kind, kind), fontsize="medium", loc="left")
        ax.grid(axis="x", alpha=0.3)
        if standardize:
            ax.axvline(0.0, color="0.6", linewidth=0.8, zorder=0)
    axes[-1].set_xlabel("(value - posterior mean) / posterior sd" if standardize
                        else "value")
    prob = f"{100 * hdi_prob:g}% HDI" if hdi_prob else "HDI"
    handles = [Line2D([], [], color=color, linewidth=2.2, marker="o", markersize=4.5,
                      label=f"{name}: {prob}, median")
               for name, color in zip(tables, colors, strict=True)]
    handles.append(Line2D([], [], color="black", marker="D", linestyle="none", label="MAP"))
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 4),
               fontsize="small", frameon=False)
    return fig


# Rows of a trace figure at most: beyond this a figure is too tall to read.
TRACE_MAX_ROWS = 30


def trace(tree, var_names=None, *, fig=None, max_rows=TRACE_MAX_ROWS, show_map=True):
    """Trace plots: each scalar's draws per chain (right) and their histograms (left).

    Parameters
    ----------
    tree : xarray.DataTree
        Posterior draws in the layout of :func:`bayes_gmm.diagnostics.to_datatree`
        (aligned, as ``sample_posterior`` returns them; component-wise traces of an
        unaligned tree jump when labels switch).
    var_names : sequence of str, optional
        Variables of the ``posterior`` group (``weights``, ``means``, ``covariances``)
        or per-draw statistics of ``sample_stats`` (``lp``, ``log_likelihood``, ...);
        by default ``lp``, ``weights``, ``means``, ``covariances``. One row per scalar
        (the upper triangle of symmetric covariance matrices).
    fig : matplotlib Figure, optional
        An empty figure to draw on; by default a new pyplot figure sized to the rows.
    max_rows : int, default TRACE_MAX_ROWS (30)
        At most this many rows; the title says when some were left out.
    show_map : bool, default True
        Mark the tree's MAP value (its ``map`` group) as a dashed black line.

    Returns
    -------
    Figure
        Two axes per row (histogram, trace), one line per chain in each trace axes;
        divergent transitions (``sample_stats.diverging``) as red ticks under the traces.
    """
    _tree_covariance_type(tree)
    var_names = ("lp", "weights", "means", "covariances") if var_names is None else (
        [var_names] if isinstance(var_names, str) else list(var_names))
    rows = []
    for name in var_names:
        rows += _trace_rows(tree, name, show_map)
    if not rows:
        raise ValueError(f"var_names {list(var_names)!r} select nothing to draw.")
    n_rows = len(rows)
    rows = rows[: int(max_rows)]
    stats = tree["sample_stats"].to_dataset() if "sample_stats" in tree.children else {}
    diverging = None
    if "diverging" in stats:
        diverging = np.asarray(stats["diverging"].transpose("chain", "draw").values, bool)
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=_trace_size(len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 3]})
    for (label, values, map_value), (left, right) in zip(rows, axes, strict=True):
        n_chains, n_draws = values.shape
        finite = values[np.isfinite(values)]
        bins = np.histogram_bin_edges(finite, bins=min(30, max(5, n_draws // 10))) if (
            finite.size and np.ptp(finite) > 0) else 10
        for c in range(n_chains):
            color = f"C{c % 10}"
            left.hist(values[c], bins=bins, density=True, histtype="step", color=color,
                      linewidth=1.0)
            right.plot(np.arange(n_draws), values[c], color=color, linewidth=0.6, alpha=0.8)
        if map_value is not None:
            left.axvline(map_value, color="black", linestyle="--", linewidth=1.0)
            right.axhline(map_value, color="black", linestyle="--", linewidth=1.0)
        if diverging is not None and diverging.any():
            draws = np.nonzero(diverging.any(axis=0))[0]
            right.plot(draws, np.zeros_like(draws), "|", color="red", markersize=8,
                       transform=right.get_xaxis_transform(), clip_on=False, gid="divergence")
        right.set_title(label, loc="left", fontsize="small")
        left.set_yticks([])
        left.xaxis.set_major_locator(MaxNLocator(3))
        left.tick_params(labelsize="x-small")
        right.tick_params(labelsize="x-small")
        right.set_xlim(0, max(n_draws - 1, 1))
    axes[-1, 1].set_xlabel("draw (after warm-up and thinning)")
    method = tree.attrs.get("method", "posterior")
    n_chains, n_draws = rows[0][1].shape
    title = f"Trace of the {method} draws: {n_chains} chains x {n_draws} draws"
    if show_map and any(row[2] is not None for row in rows):
        title += "; dashed: the MAP"
    if n_rows > len(rows):
        title += f" (first {len(rows)} of {n_rows} rows)"
    fig.suptitle(title, fontsize="medium")
    return fig


# --------------------------------------------------------------------------------------


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt  # only here: callers that pass axes never need pyplot

    _, ax = plt.subplots(figsize=(6.0, 5.0))
    return ax


def _check_features(features, n_features):
    try:
        i, j = (int(f) for f in features)
    except (TypeError, ValueError):
        raise ValueError(
            f"features must be two column indices, e.g. (0, 1); got {features!r}."
        ) from None
    if n_features < 2 or not (0 <= i < n_features and 0 <= j < n_features) or i == j:
        raise ValueError(
            f"features must be two different column indices in [0, {n_features - 1}]; "
            f"got {features!r}."
        )
    return i, j


def _set_limits(ax, u, v, margin=0.08):
    """Axis limits from the data alone, so that every iteration is drawn in one frame."""
    for values, setter in ((u, ax.set_xlim), (v, ax.set_ylim)):
        low, high = float(np.min(values)), float(np.max(values))
        pad = margin * (high - low) if high > low else 1.0
        setter(low - pad, high + pad)


def _title(iteration, log_posterior):
    parts = []
    if iteration is not None:
        parts.append(f"EM iteration {iteration}")
    if log_posterior is not None:
        parts.append(f"log posterior {log_posterior:.2f}")
    return ", ".join(parts)


def _one_dimensional(ax, x, resp, weights, means, variances, colors):
    """Histogram, weighted component densities and their sum, responsibility-coloured rug."""
    ax.hist(x, bins="auto", density=True, color="0.85", edgecolor="white")
    low, high = float(x.min()), float(x.max())
    pad = 0.1 * (high - low) if high > low else 1.0
    grid = np.linspace(low - pad, high + pad, 400)
    sd = np.sqrt(variances)
    densities = (
        weights[:, None]
        * np.exp(-0.5 * ((grid[None] - means[:, None]) / sd[:, None]) ** 2)
        / (np.sqrt(2 * np.pi) * sd[:, None])
    )
    for c in range(len(weights)):
        if weights[c] > 0:
            ax.plot(grid, densities[c], color=colors[c], linewidth=1.8)
    ax.plot(grid, densities.sum(0), color="black", linewidth=1.2, linestyle="--")
    blended = np.clip(resp @ colors, 0.0, 1.0)
    ax.scatter(x, np.zeros_like(x), c=blended, marker="|", s=200, linewidths=1.2,
               transform=ax.get_xaxis_transform(), clip_on=False)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_ylabel("density")


def _trace_size(n_rows):
    """Figure size (inches) of a trace plot of ``n_rows`` rows."""
    return (10.0, 0.8 + 1.4 * n_rows)


def _forest_size(n_rows, n_panels):
    """Figure size (inches) of a forest plot of ``n_rows`` rows in ``n_panels`` panels."""
    return (9.5, 1.4 + 0.32 * n_rows + 0.5 * n_panels)


def _ellipse_geometry(covariances, features):
    """Semi-axes (in sd, minor then major) and angles (degrees) of the 2-D marginals.

    The marginal of a Gaussian on two coordinates keeps their 2 x 2 block.
    """
    i, j = features
    blocks = np.asarray(covariances, np.float64)[:, [i, j]][:, :, [i, j]]
    eigenvalues, eigenvectors = np.linalg.eigh(blocks)
    major = eigenvectors[:, :, 1]
    angles = np.degrees(np.arctan2(major[:, 1], major[:, 0]))
    return np.sqrt(np.maximum(eigenvalues, 0.0)), angles


def _tree_covariance_type(tree):
    import xarray as xr

    if not isinstance(tree, xr.DataTree) or "posterior" not in tree.children:
        raise TypeError(
            "tree must be an xarray.DataTree with a 'posterior' group, as returned by "
            f"BayesianGMM.sample_posterior or bayes_gmm.diagnostics.load_datatree; got "
            f"{type(tree).__name__}."
        )
    return check_covariance_type(str(tree.attrs.get("covariance_type")))


def _map_params(gmm, tree, covariance_type):
    from bayes_gmm import diagnostics
    from bayes_gmm.em import GMMParams

    if gmm is None:
        if "map" not in tree.children:
            raise ValueError("The tree has no 'map' group; pass the MAP estimate as gmm.")
        return diagnostics.draws_from_datatree(tree, "map")
    if isinstance(gmm, GMMParams):
        return gmm
    if hasattr(gmm, "params_"):
        fitted = getattr(gmm, "covariance_type", covariance_type)
        if fitted != covariance_type:
            raise ValueError(
                f"gmm was fitted with covariance_type={fitted!r} but the posterior has "
                f"covariance_type={covariance_type!r}; pass the estimator that sampled it."
            )
        return gmm.params_
    raise TypeError(
        f"gmm must be a fitted BayesianGMM, a GMMParams or None; got {type(gmm).__name__}."
    )


def _data_of(tree, X, n_features):
    if X is None:
        if "observed_data" not in tree.children:
            raise ValueError("The tree has no 'observed_data' group; pass X.")
        x = tree["observed_data"]["x"].transpose("obs_id", "feature").values
    else:
        x = X
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(
            f"X must have shape (n_samples, {n_features}) like the posterior's means; got "
            f"shape {x.shape}."
        )
    return x


def _feature_names(tree, n_features):
    """Names of the features from the tree's coordinate; 'feature j' for bare integers."""
    try:
        values = tree["posterior"]["feature"].values
    except KeyError:
        values = np.arange(n_features)
    if np.issubdtype(values.dtype, np.integer):
        return [f"feature {v}" for v in values]
    return [str(v) for v in values]


def _comparison_tables(comparison) -> dict:
    import pandas as pd
    import xarray as xr

    if isinstance(comparison, xr.DataTree):
        from bayes_gmm.diagnostics import compare_map_posterior

        comparison = compare_map_posterior(None, comparison)
    if isinstance(comparison, pd.DataFrame):
        tables = {"posterior": comparison}
    elif isinstance(comparison, dict) and comparison:
        tables = dict(comparison)
    else:
        raise TypeError(
            "comparison must be a table of bayes_gmm.compare_map_posterior, a non-empty "
            "dict of such tables, or a posterior DataTree; got "
            f"{type(comparison).__name__}."
        )
    needed = ["map", "mean", "sd", "median", "hdi_lower", "hdi_upper"]
    for name, table in tables.items():
        missing = [c for c in needed if c not in getattr(table, "columns", ())]
        if missing:
            raise ValueError(
                f"comparison table {name!r} lacks the columns {missing}; pass tables of "
                "bayes_gmm.compare_map_posterior."
            )
    return tables


def _number(value) -> str:
    return f"{float(value):.4g}"


def _trace_rows(tree, name, show_map):
    """(label, values (chain, draw), MAP value or None) per scalar of variable ``name``."""
    posterior = tree["posterior"].to_dataset()
    stats = tree["sample_stats"].to_dataset() if "sample_stats" in tree.children else None
    map_ds = tree["map"].to_dataset() if show_map and "map" in tree.children else None
    if name in posterior:
        da = posterior[name]
    elif stats is not None and name in stats:
        da = stats[name]
    else:
        available = sorted(posterior.data_vars) + (sorted(stats.data_vars) if stats else [])
        raise ValueError(f"var_names: no variable {name!r} in the tree; choose from "
                         f"{available}.")
    other = [dim for dim in da.dims if dim not in ("chain", "draw")]
    da = da.transpose("chain", "draw", *other)
    values = np.asarray(da.values, np.float64)
    map_values = None
    if map_ds is not None and name in map_ds:
        map_values = np.asarray(map_ds[name].transpose(*other).values, np.float64)
    rows = []
    for index in np.ndindex(*values.shape[2:]):
        if "feature_bis" in other and index[-2] > index[-1]:
            continue  # symmetric: the upper triangle only
        coords = [da[dim].values[n] for dim, n in zip(other, index, strict=True)]
        label = f"{name}[{', '.join(map(str, coords))}]" if coords else name
        map_value = None if map_values is None else float(map_values[index])
        rows.append((label, values[(slice(None), slice(None), *index)], map_value))
    return rows


def _one_dimensional_posterior(ax, x, map_weights, map_means, map_variances, weights, means,
                               variances, colors):
    """Histogram, the MAP's weighted component densities (bold), and the draws' (thin)."""
    ax.hist(x, bins="auto", density=True, color="0.88", edgecolor="white")
    low, high = float(x.min()), float(x.max())
    pad = 0.1 * (high - low) if high > low else 1.0
    grid = np.linspace(low - pad, high + pad, 400)

    def densities(w, m, v):
        sd = np.sqrt(v)
        return (w[..., None] * np.exp(-0.5 * ((grid - m[..., None]) / sd[..., None]) ** 2)
                / (np.sqrt(2 * np.pi) * sd[..., None]))

    draws = densities(weights, means, variances)  # (S, K, G)
    for c in range(map_weights.shape[0]):
        for s in range(draws.shape[0]):
            ax.plot(grid, draws[s, c], color=colors[c], linewidth=0.6, alpha=0.18, gid="draw")
    at_map = densities(map_weights, map_means, map_variances)
    for c in range(map_weights.shape[0]):
        if map_weights[c] > 0:
            ax.plot(grid, at_map[c], color=colors[c], linewidth=2.6, gid="map")
    ax.plot(grid, at_map.sum(0), color="black", linewidth=1.2, linestyle="--")
    ax.set_xlim(grid[0], grid[-1])
    ax.set_ylabel("density")


# --------------------------------------------------------------------------------------
# Prior sensitivity

# What sweep_figure can draw, and its default selection.
SWEEP_QUANTITIES = ("weights", "means", "variances", "log_posterior", "log_likelihood",
                    "n_effective_components", "n_iter")
SWEEP_DEFAULT_QUANTITIES = ("weights", "means", "variances", "log_posterior",
                            "n_effective_components")
# Lines per component drawn in one panel at most: one per combination of the values of
# the other swept hyperparameters (a crossed grid); beyond this the panel cannot be read.
SWEEP_MAX_SERIES = 6


def is_geometric(values) -> bool:
    """Whether grid values are evenly spaced in log (and not linearly): drawn on a log axis.

    Three or more distinct positive values whose successive ratios are equal (to 0.1%) and
    whose differences are not; two positive values a decade or more apart.
    """
    v = np.unique(np.asarray(values, np.float64))
    if v.size < 2 or np.any(v <= 0):
        return False
    if v.size == 2:
        return bool(v[1] / v[0] >= 10)
    ratios, steps = np.diff(np.log(v)), np.diff(v)
    return bool(np.allclose(ratios, ratios[0], rtol=1e-3)
                and not np.allclose(steps, steps[0], rtol=1e-3))


def sweep_figure(dataset, quantities=SWEEP_DEFAULT_QUANTITIES, *, hyperparameters=None,
                 fig=None):
    """Each MAP quantity of a prior sweep against each swept hyperparameter.

    Parameters
    ----------
    dataset : xarray.Dataset
        From :func:`bayes_gmm.sensitivity.prior_sweep` (components aligned to its
        reference fit, so a colour is one cluster across the grid).
    quantities : sequence of str, default weights, means, variances, log posterior and
        effective components
        Among :data:`SWEEP_QUANTITIES`: ``weights`` (one line per component), ``means``
        and ``variances`` (the diagonal of the covariances; one line per component and
        feature, features by line style), and the per-fit scalars ``log_posterior``,
        ``log_likelihood``, ``n_effective_components``, ``n_iter``.
    hyperparameters : sequence of str, optional
        Columns of the figure; by default every swept hyperparameter.
    fig : matplotlib Figure, optional
        An empty figure to draw on; by default a new pyplot figure.

    Returns
    -------
    Figure
        One panel per quantity (rows) and hyperparameter (columns), x on a log axis where
        the grid is geometric (:func:`is_geometric`). With a crossed grid of several
        hyperparameters, a panel shows one line per combination of the others' values
        (at most :data:`SWEEP_MAX_SERIES`, more transparent as they go) for each
        component; a zipped grid is drawn in the order of the swept values.
    """
    swept = _swept_hyperparameters(dataset)
    columns = list(swept if hyperparameters is None else hyperparameters)
    unknown = [h for h in columns if h not in swept]
    if unknown or not columns:
        raise ValueError(
            f"hyperparameters must be among the swept ones, {swept}; got {columns}."
        )
    quantities = [quantities] if isinstance(quantities, str) else list(quantities)
    bad = [q for q in quantities if q not in SWEEP_QUANTITIES]
    if bad or not quantities:
        raise ValueError(
            f"quantities must be among {', '.join(map(repr, SWEEP_QUANTITIES))}; "
            f"got {quantities}."
        )
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(3.8 * len(columns), 2.6 * len(quantities)),
                         layout="constrained")
    axes = fig.subplots(len(quantities), len(columns), squeeze=False, sharex="col")
    n_components = dataset.sizes["component"]
    colors = component_colors(n_components)
    features = [str(f) for f in dataset["feature"].values]
    for j, name in enumerate(columns):
        series = _sweep_series(dataset, name, swept)
        for i, quantity in enumerate(quantities):
            ax = axes[i, j]
            for s, (label, x, sub) in enumerate(series):
                fade = 1.0 - 0.7 * s / max(len(series) - 1, 1)
                _draw_quantity(ax, quantity, x, sub, colors, fade, label or None)
            if len(series) > 1 and quantity not in ("weights", "means", "variances"):
                ax.legend(fontsize="x-small", frameon=False)
            if is_geometric(dataset[name].values):
                ax.set_xscale("log")
                # On an axis of under two decades matplotlib labels the minor ticks too,
                # and they overlap; the major ticks are enough.
                ax.xaxis.set_minor_formatter(NullFormatter())
            if i == 0:
                ax.set_title(name, fontsize="medium")
            if j == 0:
                ax.set_ylabel(quantity.replace("_", " "))
            if i == len(quantities) - 1:
                ax.set_xlabel(name)
            if quantity in ("n_effective_components", "n_iter"):
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=colors[k], label=f"component {k}")
               for k in range(n_components)]
    if any(q in ("means", "variances") for q in quantities) and len(features) > 1:
        handles += [Line2D([], [], color="0.3", linestyle=_feature_style(d),
                           label=f"feature {features[d]}") for d in range(len(features))]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4),
               fontsize="small", frameon=False)
    covariance_type = dataset.attrs.get("covariance_type", "")
    fig.suptitle(f"MAP estimate across the prior grid ({covariance_type} covariances)",
                 fontsize="medium")
    return fig


def effective_components_figure(dataset, *, ax=None):
    """The number of effective components against the weight concentration.

    Parameters
    ----------
    dataset : xarray.Dataset
        From :func:`bayes_gmm.sensitivity.prior_sweep` over
        ``weight_concentration_prior`` (with other hyperparameters crossed, one line per
        combination of their values, at most :data:`SWEEP_MAX_SERIES`).
    ax : matplotlib Axes, optional

    Returns
    -------
    Figure
        One line per series (gid ``"n_effective"``), a dotted line at K (gid
        ``"n_components"``); a log x axis where the grid is geometric. Below a
        concentration of one the Dirichlet prior favours empty components, and the MAP
        drops those whose data cannot pay for them.
    """
    name = "weight_concentration_prior"
    swept = _swept_hyperparameters(dataset)
    if name not in swept:
        raise ValueError(
            f"dataset was not swept over {name!r} (its hyperparameters: {swept}). Run "
            f"prior_sweep with grid={{{name!r}: numpy.geomspace(0.01, 10, 9)}}."
        )
    ax = _axes(ax)
    n_components = dataset.sizes["component"]
    series = _sweep_series(dataset, name, swept)
    for s, (label, x, sub) in enumerate(series):
        ax.plot(x, sub["n_effective_components"].values, marker="o", markersize=3.5,
                drawstyle="steps-mid", alpha=1.0 - 0.7 * s / max(len(series) - 1, 1),
                color="C0", label=label or None, gid="n_effective")
    ax.axhline(n_components, color="0.4", linestyle=":", linewidth=1.0, gid="n_components")
    ax.axvline(1.0, color="0.7", linewidth=0.8)
    if is_geometric(dataset[name].values):
        ax.set_xscale("log")
    ax.set_ylim(0, n_components + 0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"{name} (alpha)")
    threshold = dataset.attrs.get("weight_threshold")
    ax.set_ylabel("effective components" + (f" (weight > {threshold:g})"
                                            if threshold is not None else ""))
    if len(series) > 1:
        ax.legend(fontsize="small", frameon=False)
    return ax.figure


def _swept_hyperparameters(dataset) -> list:
    import json

    try:
        return list(json.loads(dataset.attrs["hyperparameters"]))
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ValueError(
            "dataset has no readable 'hyperparameters' attribute; pass the Dataset that "
            "bayes_gmm.sensitivity.prior_sweep returned."
        ) from None


def _sweep_series(dataset, name, swept):
    """[(label, x values, sub-dataset along x)] for one swept hyperparameter: a zipped
    grid sorted by it; a crossed one at each combination of the other swept values."""
    import itertools

    if dataset.attrs.get("combine") == "zip" or name not in dataset.dims:
        sub = dataset.sortby(name)
        return [("", sub[name].values, sub)]
    others = [h for h in swept if h != name and h in dataset.dims]
    combos = itertools.product(*(range(dataset.sizes[h]) for h in others))
    series = []
    for index in itertools.islice(combos, SWEEP_MAX_SERIES):
        sub = dataset.isel(dict(zip(others, index, strict=True))).sortby(name)
        label = ", ".join(f"{h.removesuffix('_prior')}={float(sub[h]):.3g}" for h in others)
        series.append((label, sub[name].values, sub))
    return series


def _feature_style(d):
    return ("-", "--", ":", "-.")[d % 4]


def _draw_quantity(ax, quantity, x, sub, colors, alpha, label):
    if quantity in ("weights", "means", "variances"):
        values = sub["weights" if quantity == "weights" else
                     "means" if quantity == "means" else "covariances"].values
        for k in range(values.shape[1]):
            if quantity == "weights":
                ys = [(values[:, k], "-")]
            elif quantity == "means":
                ys = [(values[:, k, d], _feature_style(d)) for d in range(values.shape[2])]
            else:
                ys = [(values[:, k, d, d], _feature_style(d)) for d in range(values.shape[2])]
            for y, style in ys:
                ax.plot(x, y, color=colors[k], linestyle=style, alpha=alpha, marker=".",
                        markersize=3, gid=quantity)
    else:
        ax.plot(x, sub[quantity].values, color="black", alpha=alpha, marker=".",
                markersize=3, gid=quantity, label=label)
    if quantity == "variances":
        ax.set_yscale("log")


# --------------------------------------------------------------------------------------
# Choosing K

# selection (criteria against K, one line per covariance type) and selection_figure (the
# results folder's, every criterion) are in bayes_gmm.plots_selection, imported above.


def occupied_components_figure(result, *, ax=None, reference=None):
    """Bar chart of the posterior of the number of occupied components.

    Parameters
    ----------
    result : OccupiedComponents or pandas.Series
        From :func:`bayes_gmm.selection.occupied_components`, or its ``probabilities``
        (index: number of occupied components, values: probabilities).
    ax : matplotlib Axes, optional
    reference : (int, int), optional
        A range of the number of components to shade for comparison (e.g. a published
        range; Richardson and Green's 1997 posterior for the galaxy data puts most of its
        mass on 3 to 7).

    Returns
    -------
    Figure
        One bar per number of components (gid ``"probability"``), the mode in red; the
        shaded reference range (gid ``"reference"``) when given.
    """
    probabilities = getattr(result, "probabilities", result)
    if not hasattr(probabilities, "index") or not hasattr(probabilities, "to_numpy"):
        raise TypeError(
            "result must be the OccupiedComponents of bayes_gmm.selection."
            f"occupied_components or its probabilities (a pandas Series); got {result!r}."
        )
    counts = np.asarray(probabilities.index, np.int64)
    values = probabilities.to_numpy(np.float64)
    ax = _axes(ax)
    if reference is not None:
        try:
            low, high = (int(v) for v in reference)
        except (TypeError, ValueError):
            raise ValueError(
                f"reference must be two integers (low, high), e.g. (3, 7); got {reference!r}."
            ) from None
        ax.axvspan(low - 0.5, high + 0.5, color="0.9", zorder=0, gid="reference",
                   label=f"reference range {low} to {high}")
    mode = int(counts[np.argmax(values)])
    colors = ["tab:red" if c == mode else "tab:blue" for c in counts]
    ax.bar(counts, values, color=colors, width=0.7, gid="probability")
    ax.set_xticks(counts)
    ax.set_xlabel("number of occupied components (points assigned in a Gibbs draw)")
    ax.set_ylabel("posterior probability")
    ax.set_ylim(0, max(1.05 * float(values.max()), 0.05))
    title = f"Occupied components: mode {mode}"
    k_max = getattr(result, "k_max", None)
    e0 = getattr(result, "weight_concentration_prior", None)
    if k_max is not None and e0 is not None:
        title += f" (k_max = {k_max}, e0 = {e0:g})"
    ax.set_title(title, fontsize="medium")
    if reference is not None:
        ax.legend(fontsize="small", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return ax.figure
