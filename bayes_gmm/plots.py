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
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse
from matplotlib.ticker import MaxNLocator

from bayes_gmm.em import e_step
from bayes_gmm.priors import check_covariance_type

# Distances (in standard deviations) of the ellipses drawn around each component, and
# their line styles: the inner one solid, the outer one dashed.
N_STD = (1.0, 2.0)
LINESTYLES = ("-", "--")


def as_full_covariances(covariances, covariance_type, n_components, n_features):
    """Covariances of any type as K full matrices.

    Parameters
    ----------
    covariances : array
        full (K, D, D), tied (D, D), diag (K, D) or spherical (K,), as in scikit-learn.
    covariance_type : {"full", "tied", "diag", "spherical"}
    n_components, n_features : int
        K and D.

    Returns
    -------
    ndarray of shape (n_components, n_features, n_features), float64
    """
    check_covariance_type(covariance_type)
    c = np.asarray(covariances, dtype=np.float64)
    k, d = n_components, n_features
    expected = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}
    if c.shape != expected[covariance_type]:
        raise ValueError(
            f"covariances must have shape {expected[covariance_type]} for "
            f"covariance_type={covariance_type!r} with K={k}, D={d}; got shape {c.shape}."
        )
    if covariance_type == "full":
        return c.copy()
    if covariance_type == "tied":
        return np.broadcast_to(c, (k, d, d)).copy()
    if covariance_type == "diag":
        return np.einsum("kd,de->kde", c, np.eye(d))
    return c[:, None, None] * np.eye(d)


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
    # The marginal of a Gaussian on two coordinates keeps their 2 x 2 block.
    blocks = covariances[:, [i, j]][:, :, [i, j]]
    for c in range(k):
        if not alive[c]:
            continue
        eigenvalues, eigenvectors = np.linalg.eigh(blocks[c])
        eigenvalues = np.maximum(eigenvalues, 0.0)
        major = eigenvectors[:, 1]
        angle = np.degrees(np.arctan2(major[1], major[0]))
        for r, radius in enumerate(n_std):
            ax.add_patch(
                Ellipse(
                    (means[c, i], means[c, j]),
                    width=2 * radius * np.sqrt(eigenvalues[1]),
                    height=2 * radius * np.sqrt(eigenvalues[0]),
                    angle=angle,
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
