"""Figures: built for every covariance type, one ellipse pair per live component, ellipses
of the right size, nothing shown and every figure closed; the posterior figures (MAP vs
draws, forest, trace) from a small Gibbs posterior of each covariance type."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from conftest import DTYPE
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from reference import covariance_matrices
from selection_tables import TYPES, selection_table

from bayes_gmm import BayesianGMM, GMMParams, compare_map_posterior, plots
from bayes_gmm.datasets import two_gaussians

pytestmark = pytest.mark.float32_pass

plt.switch_backend("Agg")
K, D = 2, 2


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def x():
    return two_gaussians(seed=0, n_samples=60)[0].astype(DTYPE)


def params_of(covariance_type, weights=(0.4, 0.6), k=K, d=D):
    means = np.stack([np.zeros(d), np.full(d, 4.0)])[:k]
    if k > 2:
        means = np.concatenate([means, np.full((k - 2, d), 2.0)])
    covariances = {
        "full": np.stack([[[1.0, 0.3], [0.3, 0.5]]] * k),
        "tied": np.array([[1.0, 0.3], [0.3, 0.5]]),
        "diag": np.tile([1.0, 0.25], (k, 1)),
        "spherical": np.linspace(1.0, 2.0, k),
    }[covariance_type]
    return GMMParams(np.asarray(weights, DTYPE), means.astype(DTYPE), covariances.astype(DTYPE))


def ellipses(ax):
    return [p for p in ax.patches if isinstance(p, Ellipse)]


def test_as_full_covariances_matches_the_reference(covariance_type):
    params = params_of(covariance_type)
    full = plots.as_full_covariances(params.covariances, covariance_type, K, D)
    assert full.shape == (K, D, D)
    np.testing.assert_allclose(
        full, covariance_matrices(params.covariances, covariance_type, K, D), rtol=1e-6
    )


def test_as_full_covariances_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(2, 2\) for covariance_type='diag'"):
        plots.as_full_covariances(np.ones((3, 2)), "diag", 2, 2)


def test_em_iteration_draws_one_ellipse_pair_per_component(x, covariance_type):
    fig = plots.em_iteration(
        x, params_of(covariance_type), covariance_type, iteration=3, log_posterior=-12.5
    )
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ellipses(ax)) == 2 * K
    assert ax.get_title() == "EM iteration 3, log posterior -12.50"
    # One scatter of all points, one colour per point.
    (points,) = ax.collections
    assert points.get_offsets().shape == (len(x), 2)
    assert points.get_facecolors().shape[0] == len(x)


def test_ellipse_axes_are_the_standard_deviations():
    # Spherical variances 1 and 2: the 1-sd circle has diameter 2 sd, the 2-sd one twice that.
    x = np.zeros((5, 2), DTYPE)
    fig = plots.em_iteration(x, params_of("spherical"), "spherical")
    widths = sorted(e.width for e in ellipses(fig.axes[0]))
    expected = sorted(2 * r * np.sqrt(v) for v in (1.0, 2.0) for r in (1, 2))
    np.testing.assert_allclose(widths, expected, rtol=1e-6)


def test_ellipse_orientation_follows_the_covariance():
    params = GMMParams(np.ones(1, DTYPE), np.zeros((1, 2), DTYPE),
                       np.array([[[2.0, 1.9], [1.9, 2.0]]], DTYPE))
    fig = plots.em_iteration(np.zeros((3, 2), DTYPE), params, "full")
    inner = ellipses(fig.axes[0])[0]
    assert inner.angle % 180 == pytest.approx(45.0, abs=1e-3)
    np.testing.assert_allclose([inner.width, inner.height], 2 * np.sqrt([3.9, 0.1]), rtol=1e-5)


def test_empty_component_is_not_drawn(x):
    params = params_of("spherical", weights=(0.5, 0.5, 0.0), k=3)
    fig = plots.em_iteration(x, params, "spherical")
    assert len(ellipses(fig.axes[0])) == 4
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[2] == "component 3: empty"


def test_points_take_their_component_colour():
    # Far from each other, each point belongs to one component: no blending.
    x = np.array([[0.0, 0.0], [40.0, 40.0]], DTYPE)
    params = GMMParams(np.array([0.5, 0.5], DTYPE), x.copy(), np.ones(2, DTYPE))
    fig = plots.em_iteration(x, params, "spherical")
    colours = fig.axes[0].collections[0].get_facecolors()[:, :3]
    np.testing.assert_allclose(colours, plots.component_colors(2), atol=1e-6)


def test_draws_on_given_axes_and_chosen_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)).astype(DTYPE)
    params = GMMParams(np.array([0.5, 0.5], DTYPE), x[:2].copy(), np.ones((2, 3), DTYPE))
    fig = Figure()
    ax = fig.add_subplot()
    assert plots.em_iteration(x, params, "diag", ax=ax, features=(2, 0),
                              feature_names=["a", "b", "c"]) is fig
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("c", "a")
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 0], x[:, 2])
    with pytest.raises(ValueError, match=r"features must be two different column indices"):
        plots.em_iteration(x, params, "diag", features=(1, 1))


def test_one_dimensional_data_get_densities():
    x = np.concatenate([np.zeros(10), np.full(10, 5.0)])[:, None].astype(DTYPE)
    params = GMMParams(np.array([0.5, 0.5], DTYPE), np.array([[0.0], [5.0]], DTYPE),
                       np.ones(2, DTYPE))
    fig = plots.em_iteration(x, params, "spherical")
    ax = fig.axes[0]
    assert len(ax.lines) == 3  # two weighted component densities and their sum
    assert ax.get_ylabel() == "density"


def test_log_posterior_trace_drops_the_unused_tail():
    history = np.array([-10.0, -8.0, -7.5, -7.4, np.nan, np.nan])
    fig = plots.log_posterior_trace(history, converged=True)
    (line,) = fig.axes[0].lines
    np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2, 3])
    assert "3 EM iterations" in fig.axes[0].get_title()
    assert "(converged)" in fig.axes[0].get_title()


def test_em_iterations_grid_one_panel_per_iteration(x):
    steps = [params_of("diag", weights=(w, 1 - w)) for w in (0.5, 0.45, 0.4)]
    history = GMMParams(*(np.stack(field) for field in zip(*steps, strict=True)))
    fig = plots.em_iterations_grid(x, history, "diag", log_posteriors=[-3.0, -2.0, -1.0],
                                   ncols=2)
    visible = [ax for ax in fig.axes if ax.axison]
    assert len(visible) == 3 and len(fig.axes) == 4
    assert all(len(ellipses(ax)) == 2 * K for ax in visible)
    assert visible[2].get_title() == "EM iteration 2, log posterior -1.00"
    with pytest.raises(ValueError, match=r"iterations must lie in \[0, 2\]"):
        plots.em_iterations_grid(x, history, "diag", iterations=[5])


def test_given_axes_open_no_pyplot_figure_and_nothing_is_shown(x, monkeypatch):
    def show(*args, **kwargs):
        raise AssertionError("plots must never call plt.show")

    monkeypatch.setattr(plt, "show", show)
    before = plt.get_fignums()
    fig = Figure()
    plots.em_iteration(x, params_of("tied"), "tied", ax=fig.add_subplot())
    plots.log_posterior_trace([-2.0, -1.0], ax=fig.add_subplot())
    plots.em_iterations_grid(x, GMMParams(*(np.stack([a]) for a in params_of("tied"))),
                             "tied", fig=Figure())
    assert plt.get_fignums() == before


# --------------------------------------------------------------------------------------
# The posterior beside the MAP: a small Gibbs posterior per covariance type (fast; the
# figures only need draws in the tree's layout, not a converged posterior).

N_CHAINS, N_DRAWS = 2, 30


@pytest.fixture(scope="module")
def posteriors(x):
    fitted = {}
    for covariance_type in ("full", "tied", "diag", "spherical"):
        gmm = BayesianGMM(K, covariance_type=covariance_type, random_state=0).fit(x)
        tree = gmm.sample_posterior(x, method="gibbs", num_chains=N_CHAINS, num_warmup=20,
                                    num_samples=N_DRAWS)
        fitted[covariance_type] = (gmm, tree)
    return fitted


def patches_with(ax, gid):
    return [p for p in ax.patches if isinstance(p, Ellipse) and p.get_gid() == gid]


def scalar_rows(covariance_type, d=D, k=K):
    """Rows of the comparison table: weights, means, covariances (upper triangle), lp."""
    covariances = {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d,
                   "spherical": k}[covariance_type]
    return k, k * d, covariances


def test_map_vs_posterior_draws_map_and_draw_ellipses(x, posteriors, covariance_type):
    gmm, tree = posteriors[covariance_type]
    fig = plots.map_vs_posterior(gmm, tree, x, n_draws=10)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(patches_with(ax, "map")) == 2 * K  # 1- and 2-sd, bold
    assert len(patches_with(ax, "draw")) == 10 * K * 2
    assert all(p.get_linewidth() > 2 for p in patches_with(ax, "map"))
    assert all(p.get_alpha() < 0.5 for p in patches_with(ax, "draw"))
    # The MAP's inner ellipse is the one of the fitted covariances, in the MAP's colour.
    full = plots.as_full_covariances(gmm.covariances_, covariance_type, K, D)
    inner = patches_with(ax, "map")[0]
    np.testing.assert_allclose(sorted([inner.width, inner.height]),
                               2 * np.sqrt(np.linalg.eigvalsh(full[0].astype(np.float64))),
                               rtol=1e-4)
    np.testing.assert_allclose(inner.get_edgecolor()[:3], plots.component_colors(K)[0])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("feature 0", "feature 1")
    assert "gibbs" in ax.get_title()


def test_map_vs_posterior_defaults_to_the_tree(posteriors):
    _, tree = posteriors["diag"]
    fig = Figure()
    ax = fig.add_subplot()
    # No estimator, no data: the tree's map group and observed data; more draws asked for
    # than there are: all of them.
    assert plots.map_vs_posterior(None, tree, ax=ax, n_draws=10_000) is fig
    assert len(patches_with(ax, "draw")) == N_CHAINS * N_DRAWS * K * 2
    np.testing.assert_allclose(ax.collections[0].get_offsets(),
                               tree["observed_data"]["x"].values, rtol=1e-6)


def test_map_vs_posterior_aligns_a_switched_tree(x, posteriors):
    from bayes_gmm import diagnostics as dg

    gmm, tree = posteriors["full"]
    draws = dg.draws_from_datatree(tree)
    swapped = GMMParams(*(np.asarray(a) for a in dg.permute_components(
        draws, np.broadcast_to([1, 0], draws.weights.shape), "full")))
    unaligned = dg.to_datatree(swapped, x=x, prior=gmm.prior_, covariance_type="full",
                               method="gibbs", map_params=gmm.params_, align=False)
    fig = plots.map_vs_posterior(gmm, unaligned, x, n_draws=5)
    centres = np.array([p.center for p in patches_with(fig.axes[0], "draw")]).reshape(5, K, 2, 2)
    # After alignment each component's draws lie around that component's MAP mean.
    np.testing.assert_allclose(centres[:, :, 0].mean(0), gmm.means_, atol=0.5)


def test_map_vs_posterior_one_dimensional():
    # Draws made up around a MAP (no sampler needed for the picture's layout).
    from bayes_gmm import default_prior
    from bayes_gmm import diagnostics as dg

    x1 = (np.concatenate([np.zeros(15), np.full(15, 6.0)]) + np.tile(np.linspace(-1, 1, 15), 2))
    x1 = x1[:, None].astype(DTYPE)
    centre = GMMParams(np.array([0.5, 0.5], DTYPE), np.array([[0.0], [6.0]], DTYPE),
                       np.array([0.4, 0.4], DTYPE))
    rng = np.random.default_rng(0)
    draws = GMMParams(*(np.asarray(a * np.exp(0.05 * rng.normal(size=(1, 8) + a.shape)), DTYPE)
                        for a in centre))
    draws = draws._replace(weights=draws.weights / draws.weights.sum(-1, keepdims=True))
    tree = dg.to_datatree(draws, x=x1, prior=default_prior(x1, 2, "spherical"),
                          covariance_type="spherical", method="made-up", map_params=centre,
                          log_likelihood=False)
    ax = plots.map_vs_posterior(None, tree, n_draws=4).axes[0]
    assert len([line for line in ax.lines if line.get_gid() == "draw"]) == 4 * 2
    assert len([line for line in ax.lines if line.get_gid() == "map"]) == 2
    assert ax.get_ylabel() == "density" and ax.get_xlabel() == "feature 0"


def test_forest_marks_the_map_per_parameter(posteriors, covariance_type):
    gmm, tree = posteriors[covariance_type]
    table = compare_map_posterior(gmm, tree)
    fig = plots.forest(table)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[:3] == ["weights", "means", "covariances"] and titles[3].startswith("log post")
    for ax, rows in zip(fig.axes, (*scalar_rows(covariance_type), 1), strict=True):
        maps = [line for line in ax.lines if line.get_gid() == "map"]
        assert len(maps) == rows == len(ax.get_yticks())
        assert len([line for line in ax.lines if line.get_gid() == "hdi"]) == rows
    # Standardised: the MAP sits at z = (map - mean) / sd of its row.
    (weights_ax, means_ax, *_) = fig.axes
    first_mean = [line for line in means_ax.lines if line.get_gid() == "map"][0]
    assert first_mean.get_xdata()[0] == pytest.approx(
        table.loc[table.index[K], "z"], rel=1e-6, abs=1e-9)
    assert means_ax.get_yticklabels()[-1].get_text() == table.index[K]  # the top row


def test_forest_compares_methods_and_natural_units(posteriors):
    gmm, tree = posteriors["spherical"]
    table = compare_map_posterior(gmm, tree)
    shifted = table.assign(hdi_lower=table["hdi_lower"] - 1.0)
    fig = plots.forest({"gibbs": table, "other": shifted}, standardize=False,
                       include_lp=False, fig=Figure(layout="constrained"))
    assert len(fig.axes) == 3  # no lp panel
    means_ax = fig.axes[1]
    hdis = [line for line in means_ax.lines if line.get_gid() == "hdi"]
    assert len(hdis) == 2 * K * D  # two methods per row, side by side
    assert {h.get_color() for h in hdis} == {"C0", "C1"}
    lows = sorted(min(h.get_xdata()) for h in hdis)
    expected = sorted(np.concatenate([table["hdi_lower"].iloc[K:K + K * D],
                                      shifted["hdi_lower"].iloc[K:K + K * D]]))
    np.testing.assert_allclose(lows, expected, rtol=1e-6)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0].startswith("gibbs: 89% HDI") and legend[-1] == "MAP"


def test_forest_of_a_tree_and_bad_input(posteriors):
    _, tree = posteriors["tied"]
    assert len(plots.forest(tree).axes) == 4  # compared with its own map group
    with pytest.raises(ValueError, match=r"lacks the columns \['hdi_lower', 'hdi_upper'\]"):
        plots.forest(compare_map_posterior(None, tree).drop(columns=["hdi_lower",
                                                                     "hdi_upper"]))
    with pytest.raises(TypeError, match="comparison must be a table"):
        plots.forest([1, 2])


def test_trace_one_row_per_scalar_and_a_line_per_chain(posteriors, covariance_type):
    gmm, tree = posteriors[covariance_type]
    fig = plots.trace(tree, ["covariances"])
    rows = scalar_rows(covariance_type)[2]
    assert len(fig.axes) == 2 * rows
    traces = fig.axes[1::2]
    for ax in traces:
        chains = [line for line in ax.lines if line.get_linestyle() == "-"]
        assert len(chains) == N_CHAINS
        assert len(chains[0].get_ydata()) == N_DRAWS
    assert traces[0].get_title(loc="left").startswith("covariances[")
    # The MAP is marked (dashed) at the fitted value.
    dashed = [line for line in traces[0].lines if line.get_linestyle() == "--"]
    first = np.ravel(plots.as_full_covariances(gmm.covariances_, covariance_type, K, D)[0])[0]
    assert dashed and dashed[0].get_ydata()[0] == pytest.approx(float(first), rel=1e-5)


def test_trace_defaults_divergences_and_row_limit(posteriors):
    _, tree = posteriors["full"]
    fig = plots.trace(tree)  # lp, weights, means, covariances: 1 + 2 + 4 + 6 rows
    assert len(fig.axes) == 2 * 13
    assert fig.axes[1].get_title(loc="left") == "lp"
    assert "gibbs draws: 2 chains x 30 draws" in fig.get_suptitle()

    marked = tree.copy()
    diverging = np.zeros((N_CHAINS, N_DRAWS), bool)
    diverging[1, [3, 7]] = True
    marked["sample_stats"] = marked["sample_stats"].to_dataset().assign(
        diverging=(("chain", "draw"), diverging))
    fig = plots.trace(marked, "weights", max_rows=1)
    (ticks,) = [line for line in fig.axes[1].lines if line.get_gid() == "divergence"]
    np.testing.assert_array_equal(ticks.get_xdata(), [3, 7])
    assert "(first 1 of 2 rows)" in fig.get_suptitle()
    with pytest.raises(ValueError, match=r"no variable 'mu' in the tree; choose from"):
        plots.trace(tree, ["mu"])


def test_posterior_figures_on_given_figures_open_no_pyplot_figure(x, posteriors,
                                                                  monkeypatch):
    def show(*args, **kwargs):
        raise AssertionError("plots must never call plt.show")

    monkeypatch.setattr(plt, "show", show)
    gmm, tree = posteriors["full"]
    before = plt.get_fignums()
    plots.map_vs_posterior(gmm, tree, x, ax=Figure().add_subplot())
    plots.forest(compare_map_posterior(gmm, tree), fig=Figure())
    plots.trace(tree, fig=Figure())
    assert plt.get_fignums() == before
    with pytest.raises(TypeError, match="tree must be an xarray.DataTree"):
        plots.map_vs_posterior(gmm, {"posterior": None}, x)


def test_plots_is_reachable_from_a_plain_import():
    # The snippet: `import bayes_gmm; bayes_gmm.plots.map_vs_posterior(...)`.
    import subprocess
    import sys

    code = ("import sys, bayes_gmm; assert 'matplotlib' not in sys.modules; "
            "f = bayes_gmm.plots.map_vs_posterior; assert 'matplotlib' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    import bayes_gmm

    assert bayes_gmm.plots is plots
    with pytest.raises(AttributeError, match="no attribute 'plotz'"):
        bayes_gmm.plotz  # noqa: B018


# --------------------------------------------------------------------------------------
# Choosing K and the covariance type: plots.selection, plots.selection_figure

def criterion_lines(ax):
    return [line for line in ax.lines if line.get_gid() == "criterion"]


def test_selection_draws_one_line_per_covariance_type_and_rings_the_best():
    table = selection_table(best_at=("tied", 3))
    fig = plots.selection(table)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2  # BIC and ICL by default
    for ax, column in zip(axes, ("bic", "icl"), strict=True):
        lines = criterion_lines(ax)
        assert [line.get_label() for line in lines] == TYPES  # the table's order
        for line, covariance_type in zip(lines, TYPES, strict=True):
            np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])
            np.testing.assert_array_equal(line.get_ydata(),
                                          table.loc[covariance_type, column].to_numpy())
        (ring,) = [line for line in ax.lines if line.get_gid() == "best"]
        assert (ring.get_xdata()[0], ring.get_ydata()[0]) == (3, table.loc[("tied", 3), column])
        assert any(text.get_text() == "tied, K = 3" for text in ax.texts)
        label = ax.get_ylabel()
        assert "lower is better" in label and f"mclust plots -{column.upper()}" in label
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    (legend,) = fig.legends
    legend = [text.get_text() for text in legend.get_texts()]
    assert legend == [*TYPES, "best"]
    assert "covariance type" in fig.get_suptitle()


def test_selection_of_one_covariance_type_draws_one_line():
    table = selection_table(types=["full"], best_at=("full", 2))
    fig = plots.selection(table, criteria="bic", fig=Figure())
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    (line,) = criterion_lines(ax)
    np.testing.assert_array_equal(line.get_ydata(), table["bic"].to_numpy())
    (ring,) = [line for line in ax.lines if line.get_gid() == "best"]
    assert ring.get_xdata()[0] == 2
    assert any(text.get_text() == "K = 2" for text in ax.texts)
    assert "full covariances" in fig.get_suptitle()


def test_selection_marks_the_row_select_k_marked_and_finds_one_without_marks():
    table = selection_table(best_at=("diag", 2))
    # select_k's mark wins (e.g. its tie rule); without marks the best value is found.
    table["best_bic"] = False
    table.loc[("full", 4), "best_bic"] = True
    fig = plots.selection(table, criteria=["bic", "heldout"])
    rings = [[line for line in ax.lines if line.get_gid() == "best"][0] for ax in fig.axes
             if ax.get_visible()]
    assert rings[0].get_xdata()[0] == 4
    unmarked = table.drop(columns=[c for c in table.columns if c.startswith("best_")])
    fig = plots.selection(unmarked, criteria=["bic", "heldout"])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for ax in axes:  # lowest BIC, highest held-out likelihood: diag K = 2
        (ring,) = [line for line in ax.lines if line.get_gid() == "best"]
        assert ring.get_xdata()[0] == 2
        assert any(text.get_text() == "diag, K = 2" for text in ax.texts)
    assert "higher is better" in axes[1].get_ylabel()


def test_selection_defaults_to_the_information_criteria_the_table_has():
    table = selection_table().drop(columns=["bic", "icl", "best_bic", "best_icl"])
    fig = plots.selection(table)
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    assert ax.get_title().startswith("AIC")


def test_selection_figure_draws_every_criterion_per_covariance_type():
    table = selection_table()
    fig = plots.selection_figure(table, fig=Figure())
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split("\n")[0] for ax in axes] == [
        "BIC at the MAP", "ICL at the MAP", "AIC at the MAP",
        "held-out log likelihood per point", "PSIS-LOO elpd"]
    for ax in axes:
        assert len(criterion_lines(ax)) == len(TYPES)
    assert len(axes[-1].containers) == len(TYPES)  # one error bar set per type (LOO)


@pytest.mark.parametrize(("change", "error", "words"), [
    (lambda t: t[["heldout_log_likelihood", "elpd_loo"]], ValueError,
     r"no information criterion column \(bic, icl or aic\).*criteria=\['bic', 'icl'\]"),
    (lambda t: t[["bic"]].assign(n=1).set_index("n", append=True), ValueError,
     r"expected \('covariance_type', 'k'\)"),
    (lambda t: t["bic"], TypeError, "pandas DataFrame returned by"),
])
def test_selection_errors_name_the_fix(change, error, words):
    with pytest.raises(error, match=words):
        plots.selection(change(selection_table()))


def test_selection_criteria_errors_name_the_fix():
    table = selection_table()
    with pytest.raises(ValueError, match="unknown criterion 'bics'; choose among 'bic'"):
        plots.selection(table, criteria=["bics"])
    with pytest.raises(ValueError, match="no 'aic' column.*Recompute the table with 'aic'"):
        plots.selection(table.drop(columns="aic"), criteria=["bic", "aic"])
    with pytest.raises(ValueError, match="no criterion column"):
        plots.selection_figure(table[[]])
