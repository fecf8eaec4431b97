"""Figures: built for every covariance type, one ellipse pair per live component, ellipses
of the right size, nothing shown and every figure closed."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from conftest import DTYPE
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from reference import covariance_matrices

from bayes_gmm import GMMParams, plots
from bayes_gmm.datasets import two_gaussians

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
