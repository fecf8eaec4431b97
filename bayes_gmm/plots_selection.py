"""Figures for choosing K and the covariance type: the criteria of ``select_k`` against K.

:func:`selection` is the picture users of R's mclust know from ``plot(fit, what =
"BIC")``: one panel per criterion, K on the horizontal axis, one line per covariance
type, the best model ringed. It reads the table of :func:`bayes_gmm.selection.select_k`
as it comes: one covariance type (index ``k``) or several (index ``(covariance_type,
k)``). The sign is scikit-learn's (BIC, ICL and AIC: lower is better), not mclust's
(which plots -BIC, higher is better); every axis label says which way is better.
:func:`selection_figure`, the figure of the results folder, is the same drawing with a
panel for every criterion the table holds (held-out log likelihood and PSIS-LOO too).

Which way each criterion points and the column it is read from are
:data:`bayes_gmm.selection.CRITERION_COLUMNS`; the best row is the one ``select_k``
marked (its ``best_<criterion>`` column), so the figure and the table never disagree.
Re-exported by :mod:`bayes_gmm.plots`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from bayes_gmm.selection import CRITERION_COLUMNS

# Per criterion: panel title and the y label (the direction is added to both).
LABELS = {
    "bic": ("BIC at the MAP", "BIC", "mclust plots -BIC"),
    "icl": ("ICL at the MAP", "ICL", "mclust plots -ICL"),
    "aic": ("AIC at the MAP", "AIC", None),
    "heldout": ("held-out log likelihood per point", "mean log density", None),
    "loo": ("PSIS-LOO elpd", "elpd", None),
}
INFORMATION_CRITERIA = ("bic", "icl", "aic")
# What selection draws when not told: BIC and ICL, as mclust's plot does.
DEFAULT_CRITERIA = ("bic", "icl")

# The panels of selection_figure (table column, title, whether lower is better), in the
# order drawn.
SELECTION_PANELS = tuple(
    (CRITERION_COLUMNS[c][0], LABELS[c][0], CRITERION_COLUMNS[c][1] == "min")
    for c in LABELS
)

# A covariance type keeps its colour and marker in every panel and every figure.
TYPE_STYLES = {
    "full": ("tab:blue", "o"),
    "tied": ("tab:orange", "s"),
    "diag": ("tab:green", "^"),
    "spherical": ("tab:purple", "D"),
}
BEST_COLOR = "tab:red"


def selection(table, criteria=None, *, fig=None):
    """Information criteria against K, one line per covariance type, the best ringed.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`bayes_gmm.selection.select_k`: index ``k`` (one covariance type,
        named by ``table.attrs["covariance_type"]``) or a MultiIndex ``(covariance_type,
        k)`` (several).
    criteria : str or sequence of str, optional
        Criteria to draw, one panel each, among ``"bic"``, ``"icl"``, ``"aic"``,
        ``"heldout"``, ``"loo"``. By default BIC and ICL, those of them the table has, and
        otherwise the information criteria it has (AIC).
    fig : matplotlib Figure, optional
        An empty figure to draw on; by default a new pyplot figure.

    Returns
    -------
    Figure
        One panel per criterion (up to three in a row), titled with the criterion and
        the direction that is better, which the y label repeats (with mclust's opposite
        sign for BIC and ICL). In each panel, one line with markers per covariance type
        (gid ``"criterion"``, label: the type, in the table's order), error bars of one
        standard error for ``"loo"`` (gid ``"se"``), and the best row over all types
        ringed (gid ``"best"``) and labelled. K ticks are integers. The legend of the
        types is beside the panels (``fig.legends``).

    Raises
    ------
    TypeError
        ``table`` is not a DataFrame.
    ValueError
        No criterion to draw: the table has none of the columns asked for (or, by
        default, no information criterion); an unknown criterion; an index that is
        neither ``k`` nor ``(covariance_type, k)``.

    Examples
    --------
    >>> from bayes_gmm import datasets, plots, select_k
    >>> x = datasets.old_faithful()
    >>> table = select_k(x, 9, covariance_type=["full", "diag", "spherical", "tied"],
    ...                  criteria=["bic", "icl"], random_state=0)  # doctest: +SKIP
    >>> plots.selection(table)  # doctest: +SKIP
    """
    models = _models(table)
    criteria = _criteria(table, criteria)
    n_columns = min(len(criteria), 3)
    n_rows = -(-len(criteria) // n_columns)
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(3.6 * n_columns, 3.0 * n_rows + 0.4), layout="constrained")
    elif fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")  # room for the labels and the legend beside
    axes = fig.subplots(n_rows, n_columns, squeeze=False).ravel()
    several = len(models) > 1
    for ax, criterion in zip(axes, criteria, strict=False):
        column, direction = CRITERION_COLUMNS[criterion]
        lower = direction == "min"
        title, short, mclust = LABELS[criterion]
        for number, (covariance_type, rows) in enumerate(models):
            color, marker = _style(covariance_type, number)
            ks = rows.index.to_numpy(np.int64)
            values = rows[column].to_numpy(np.float64)
            if criterion == "loo" and "elpd_loo_se" in rows.columns:
                ax.errorbar(ks, values, yerr=rows["elpd_loo_se"].to_numpy(np.float64),
                            color=color, alpha=0.5, linestyle="none", capsize=3, gid="se")
            ax.plot(ks, values, marker=marker, markersize=4.5, color=color, gid="criterion",
                    label=covariance_type if covariance_type is not None else column)
        best = _best_row(table, criterion)
        if best is not None:
            covariance_type, k, value = best
            ax.plot(k, value, marker="o", markersize=15, markerfacecolor="none",
                    markeredgecolor=BEST_COLOR, markeredgewidth=2, linestyle="none",
                    gid="best", zorder=3)
            text = f"{covariance_type}, K = {k}" if several else f"K = {k}"
            last = k == max(int(rows.index.max()) for _, rows in models)
            # At the largest K the label goes left of the ring, inside the panel.
            ax.annotate(text, (k, value), textcoords="offset points",
                        xytext=(-9, 9) if last else (9, 9), ha="right" if last else "left",
                        fontsize="small", color=BEST_COLOR)
        better = "lower" if lower else "higher"
        ax.set_title(f"{title}\n({better} is better)", fontsize="medium")
        ax.set_ylabel(f"{short} ({better} is better"
                      + (f";\n{mclust})" if mclust else ")"), fontsize="small")
        ax.set_xlabel("K (components)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.12, y=0.14)  # room for the ring and its label at the edges
        ax.grid(alpha=0.3)
    for ax in axes[len(criteria):]:
        ax.set_visible(False)
    if models[0][0] is not None:
        ring = Line2D([], [], marker="o", markersize=9, markerfacecolor="none",
                      markeredgecolor=BEST_COLOR, markeredgewidth=2, linestyle="none",
                      label="best")
        handles = [line for line in axes[0].lines if line.get_gid() == "criterion"]
        # Beside the panels, not in one: the lines fill the panels' corners.
        fig.legend(handles=[*handles, ring], title="covariance" if several else None,
                   loc="outside right upper", fontsize="small", title_fontsize="small",
                   frameon=False)
    if several:
        heading = "Choosing K and the covariance type"
    else:
        heading = "Choosing K" + (f" ({models[0][0]} covariances)" if models[0][0] else "")
    fig.suptitle(heading, fontsize="medium")
    return fig


def selection_figure(table, *, fig=None):
    """Every criterion of :func:`bayes_gmm.selection.select_k` against K.

    :func:`selection` with a panel for each criterion the table has (``bic``, ``icl``,
    ``aic``, ``heldout_log_likelihood``, ``elpd_loo``, in that order): the figure of the
    results folder (``selection.<ext>``).

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`bayes_gmm.selection.select_k`, one covariance type or several.
    fig : matplotlib Figure, optional
        An empty figure to draw on; by default a new pyplot figure.

    Returns
    -------
    Figure
        As :func:`selection`.
    """
    present = [criterion for criterion, (column, _) in CRITERION_COLUMNS.items()
               if criterion in LABELS and column in getattr(table, "columns", ())]
    if not present:
        raise ValueError(
            "table has no criterion column (bic, icl, aic, heldout_log_likelihood, "
            "elpd_loo); pass the table returned by bayes_gmm.selection.select_k."
        )
    order = list(LABELS)
    return selection(table, sorted(present, key=order.index), fig=fig)


# --------------------------------------------------------------------------------------
# Reading the table


def _models(table) -> list[tuple[str | None, pd.DataFrame]]:
    """``[(covariance_type, rows indexed by k, ascending)]``, types in the table's order;
    one ``(name or None, table)`` for a single-type table."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(
            "table must be the pandas DataFrame returned by bayes_gmm.selection.select_k; "
            f"got {type(table).__name__}."
        )
    index = table.index
    if isinstance(index, pd.MultiIndex):
        if list(index.names) != ["covariance_type", "k"]:
            raise ValueError(
                "table has a MultiIndex with levels "
                f"{list(index.names)}; expected ('covariance_type', 'k'), as select_k "
                "returns with several covariance types. Pass select_k's table unchanged "
                "(or set_index(['covariance_type', 'k']) on a table read from selection.csv)."
            )
        types = list(dict.fromkeys(index.get_level_values("covariance_type")))
        return [(str(t), table.xs(t, level="covariance_type").sort_index()) for t in types]
    if index.name not in ("k", None):
        raise ValueError(
            f"table's index is {index.name!r}; expected 'k' (one covariance type) or "
            "('covariance_type', 'k') (several), as select_k returns. Pass select_k's table "
            "unchanged (or set_index('k') on a table read from selection.csv)."
        )
    name = getattr(table, "attrs", {}).get("covariance_type")
    return [(name if isinstance(name, str) else None, table.sort_index())]


def _criteria(table, criteria) -> list[str]:
    columns = getattr(table, "columns", ())
    if criteria is None:
        chosen = [c for c in DEFAULT_CRITERIA if CRITERION_COLUMNS[c][0] in columns]
        chosen = chosen or [c for c in INFORMATION_CRITERIA if CRITERION_COLUMNS[c][0] in columns]
        if not chosen:
            raise ValueError(
                "table has no information criterion column (bic, icl or aic): it was "
                "computed without them. Recompute it with e.g. select_k(x, ks, "
                "criteria=['bic', 'icl']), or draw the criteria it has with "
                "plots.selection(table, criteria=['heldout']) or "
                "plots.selection_figure(table)."
            )
        return chosen
    if isinstance(criteria, str):
        criteria = [criteria]
    criteria = list(criteria)
    if not criteria:
        raise ValueError("criteria is empty; pass e.g. criteria=['bic', 'icl'], or None "
                         "for BIC and ICL.")
    for criterion in criteria:
        if criterion not in LABELS:
            raise ValueError(
                f"criteria: unknown criterion {criterion!r}; choose among "
                f"{', '.join(map(repr, LABELS))}."
            )
        column = CRITERION_COLUMNS[criterion][0]
        if column not in columns:
            raise ValueError(
                f"table has no {column!r} column: select_k was run without {criterion!r} "
                f"in its criteria. Recompute the table with {criterion!r} in criteria, or "
                "leave it out of the criteria to draw."
            )
    return list(dict.fromkeys(criteria))


def _best_row(table, criterion) -> tuple[str | None, int, float] | None:
    """``(covariance_type, k, value)`` of the best row: the one select_k marked in
    ``best_<criterion>``, else the first best value; None when every value is NaN."""
    column, direction = CRITERION_COLUMNS[criterion]
    values = table[column].to_numpy(np.float64)
    marked = table.get(f"best_{criterion}")
    if marked is not None and marked.to_numpy(bool).sum() == 1:
        position = int(np.flatnonzero(marked.to_numpy(bool))[0])
    elif np.isfinite(values).any():
        position = int(np.nanargmin(values) if direction == "min" else np.nanargmax(values))
    else:
        return None
    if isinstance(table.index, pd.MultiIndex):
        covariance_type, k = table.index[position]
    else:
        covariance_type, k = table.attrs.get("covariance_type"), table.index[position]
    return covariance_type, int(k), float(values[position])


def _style(covariance_type, number) -> tuple[str, str]:
    if covariance_type in TYPE_STYLES:
        return TYPE_STYLES[covariance_type]
    return f"C{number % 10}", "o"
