"""Experiment configs: a TOML file read into frozen dataclasses, checked before anything runs.

A config says what to fit (``[data]``), how (``[model]``, ``[prior]``), whether to sample
the posterior after the MAP fit (``[posterior]``, optional) and what to write
(``[output]``); the CLI (:mod:`bayes_gmm.cli`) turns it into a results folder. This module
only reads and checks. Checks here are about the *form* of the file: unknown keys, missing
required keys, types, list lengths and matrix shapes that the config itself determines.
Whether a value is statistically admissible (a positive definite ``covariance_prior``,
``degrees_of_freedom_prior > D - 1``) is decided once, by :mod:`bayes_gmm.priors` and the
estimator, after the data are loaded. Every problem raises :class:`ConfigError` naming the
key path (``model.n_components``), what was expected, what came, and the fix.

The schema is the dataclasses below; the loader reads their fields and type annotations, so
adding a section for a later feature (``[sensitivity]``, say) is one new frozen dataclass and
one field of :class:`ExperimentConfig` with a default (``None`` for a section whose absence
means "not asked for"), with no change to the loader (a new kind of ``[data]`` is one
dataclass and one entry of :data:`DATA_KINDS`)::

    name = "em_walkthrough"          # the results folder: <output_dir>/<name>
    seed = 14                        # one integer: the data draw and the initialisation
    output_dir = "results"           # relative to the working directory
    compilation_cache = false        # optional: off, or a folder (relative to this file);
                                     # left out: the default (bayes_gmm.compilation_cache)

    [data]
    source = "synthetic"             # or "builtin" (name = ...) or "csv" (path = ...)
    generator = "two_gaussians"      # or "mixture" (weights, means, covariances)
    n_samples = 200
    # builtin and csv: subsample = 20 keeps 20 rows drawn without replacement (seed = ...
    # seeds the draw; by default the experiment's seed)

    [model]                          # BayesianGMM's arguments
    n_components = 2
    covariance_type = "full"
    init_params = "random"

    [prior]                          # scikit-learn's names; left out: the defaults
    mean_precision_prior = 0.01

    [posterior]                      # optional; left out: the MAP only
    method = "nuts"                  # or "gibbs", "laplace"
    num_chains = 4
    num_warmup = 500
    num_samples = 1000
    compare_methods = ["gibbs", "laplace"]  # optional: more methods on the same MAP

With several methods (``method`` and ``compare_methods``), the main method's files keep
the single-method names (``posterior.nc``, ``comparison.csv``, ``diagnostics.csv``,
``map_vs_posterior.png``, ``trace*.png``), each compared method writes the same files
with its name as a suffix (``posterior_gibbs.nc``, ``comparison_gibbs.csv``, ...),
``posterior.json`` holds one entry per method under ``methods`` and ``forest.png``
draws them all side by side.

    [output]
    iteration_figures = true

    [sensitivity]                    # optional; left out: no prior sweep
    combine = "cross"                # or "zip"
    weight_threshold = 0.01          # a component is effective above this weight
    [sensitivity.grid]               # keys: bayes_gmm.sensitivity.HYPERPARAMETERS
    weight_concentration_prior = { geomspace = [0.001, 10.0, 16] }  # or linspace
    mean_precision_prior = [0.01, 0.1, 1.0]                         # or the values

With ``[sensitivity]`` the MAP is refitted over the grid
(:func:`bayes_gmm.sensitivity.prior_sweep`), and with ``[posterior]`` as well the
posterior's power-scaling sensitivity is tabulated (``power_scaling = false`` turns that
off).

::

    [selection]                      # optional; left out: no choosing K
    ks = [1, 2, 3, 4, 5, 6]          # or an integer k: 1..k
    covariance_type = ["full", "diag", "spherical", "tied"]  # or one; default [model]'s
    criteria = ["bic", "icl", "aic", "heldout", "loo"]
    validation_fraction = 0.25       # "heldout": share of the points held out
    posterior = "gibbs"              # "loo": the sampler, one posterior per K
    num_chains = 4
    num_warmup = 500
    num_samples = 1000
    [selection.occupied]             # optional: a sparse overfitted mixture
    k_max = 10
    weight_concentration_prior = 0.01
    num_chains = 4
    num_warmup = 1000
    num_samples = 2000
    reference = [3, 7]               # optional: a published range, shaded on the figure

With ``[selection]`` every criterion is computed for every K and covariance type
(:func:`bayes_gmm.selection.select_k`) with ``[model]``'s EM settings and ``[prior]``'s
overrides; ``[model] n_components`` remains the K of the main MAP fit.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# Array values: TOML arrays become (nested) tuples, so that a config stays frozen and
# hashable. Their shapes are checked by the sections' _check methods.
Vector = tuple[float, ...]
Matrix = tuple[tuple[float, ...], ...]
Tensor3 = tuple[tuple[tuple[float, ...], ...], ...]

# A folder name that is safe everywhere: no separators, no leading dot (hidden, and the
# CLI's temporary folders start with one).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Features of the shipped data sets, for shape checks of priors before the data are read.
BUILTIN_N_FEATURES = {"old_faithful": 2, "galaxy_velocities": 1}


class ConfigError(ValueError):
    """A config file that cannot be used as written.

    Attributes
    ----------
    key : str or None
        Dotted path of the offending key (``"model.n_components"``), when there is one.
    source : str
        The file (or ``"<config>"`` for a dictionary).
    """

    def __init__(self, message: str, key: str | None = None, source: str = "<config>"):
        super().__init__(message)
        self.key = key
        self.source = source


def _minimum(value, **kwargs):
    """Field metadata: the smallest admissible number."""
    return field(metadata={"minimum": value}, **kwargs)


# --------------------------------------------------------------------------------------
# [data]: one dataclass per kind of source, told apart by `source` (and `generator`)


@dataclass(frozen=True)
class TwoGaussiansData:
    """Two 2-D clusters from :func:`bayes_gmm.datasets.two_gaussians`."""

    source: Literal["synthetic"] = "synthetic"
    generator: Literal["two_gaussians"] = "two_gaussians"
    n_samples: int = _minimum(1, default=300)
    weights: Vector = (0.5, 0.5)
    separation: float = 4.0
    seed: int | None = _minimum(0, default=None)  # None: the experiment's seed

    @property
    def n_features(self) -> int | None:
        return 2

    def _check(self, where: _Where) -> None:
        if len(self.weights) != 2:
            where.fail(
                "weights", "two numbers (one per cluster)", _shown(self.weights),
                "Write e.g. weights = [0.5, 0.5].",
            )


@dataclass(frozen=True)
class MixtureData:
    """A draw from any Gaussian mixture, :func:`bayes_gmm.datasets.synthetic_mixture`."""

    weights: Vector
    means: Matrix
    covariances: Tensor3
    source: Literal["synthetic"] = "synthetic"
    generator: Literal["mixture"] = "mixture"
    n_samples: int = _minimum(1, default=300)
    seed: int | None = _minimum(0, default=None)  # None: the experiment's seed

    @property
    def n_features(self) -> int | None:
        return len(self.means[0]) if self.means else None

    def _check(self, where: _Where) -> None:
        k = len(self.weights)
        if len(self.means) != k or len({len(row) for row in self.means}) > 1 or not k:
            where.fail(
                "means", f"{k} rows (one per weight) of equal length", _shown(self.means),
                "Give one mean per component, e.g. means = [[0.0, 0.0], [4.0, 2.0]].",
            )
        d = len(self.means[0])
        for c, matrix in enumerate(self.covariances):
            if len(matrix) != d or any(len(row) != d for row in matrix):
                where.fail(
                    f"covariances[{c}]", f"a {d} x {d} matrix (D = {d} from means)",
                    _shown(matrix), "Give one D x D matrix per component.",
                )
        if len(self.covariances) != k:
            where.fail(
                "covariances", f"{k} matrices (one per weight)",
                f"{len(self.covariances)}", "Give one D x D matrix per component.",
            )


@dataclass(frozen=True)
class BuiltinData:
    """A data set shipped with the package (:mod:`bayes_gmm.datasets`), as its function
    returns it by default (galaxy velocities in km/s; ``thousands = true`` divides them by
    1000, the units of the mixture literature).

    ``subsample = n`` keeps ``n`` rows drawn without replacement (in their original order)
    by :func:`bayes_gmm.experiment.subsample_rows` from ``seed`` (by default the
    experiment's seed): the same data with fewer points, to see what the posterior does
    when data are few.
    """

    name: Literal["old_faithful", "galaxy_velocities"]
    source: Literal["builtin"] = "builtin"
    columns: tuple[str, ...] | None = None  # None: every column
    subsample: int | None = _minimum(1, default=None)  # None: every row
    seed: int | None = _minimum(0, default=None)  # of the subsample; None: the experiment's
    # galaxy_velocities only: in 1000 km/s (column velocity_1000_km_s), the literature's units
    thousands: bool = False

    @property
    def n_features(self) -> int | None:
        return len(self.columns) if self.columns else BUILTIN_N_FEATURES[self.name]

    def _check(self, where: _Where) -> None:
        _check_subsample(self, where)
        if self.thousands and self.name != "galaxy_velocities":
            where.fail(
                "thousands", 'thousands = true only with name = "galaxy_velocities" (it '
                "divides the velocities by 1000)", f"true with name = {self.name!r}",
                "Remove thousands.",
            )


@dataclass(frozen=True)
class CsvData:
    """A CSV file with a header row; ``path`` is relative to the config file.
    ``subsample`` and ``seed`` as for :class:`BuiltinData`."""

    path: Path
    source: Literal["csv"] = "csv"
    columns: tuple[str, ...] | None = None  # None: every column
    subsample: int | None = _minimum(1, default=None)  # None: every row
    seed: int | None = _minimum(0, default=None)  # of the subsample; None: the experiment's

    @property
    def n_features(self) -> int | None:
        return len(self.columns) if self.columns else None

    def _check(self, where: _Where) -> None:
        _check_subsample(self, where)


def _check_subsample(spec: BuiltinData | CsvData, where: _Where) -> None:
    """``seed`` of [data] only seeds a subsample: alone it would silently do nothing."""
    if spec.seed is not None and spec.subsample is None:
        where.fail(
            "seed", "no seed without subsample (it seeds the choice of rows)",
            _shown(spec.seed), "Add e.g. subsample = 20, or remove seed.",
        )


DataConfig = TwoGaussiansData | MixtureData | BuiltinData | CsvData

# source -> generator -> dataclass (None: the source has no generator key).
DATA_KINDS = {
    "synthetic": {"two_gaussians": TwoGaussiansData, "mixture": MixtureData},
    "builtin": {None: BuiltinData},
    "csv": {None: CsvData},
}


# --------------------------------------------------------------------------------------
# [model], [prior], [output]


@dataclass(frozen=True)
class ModelConfig:
    """Arguments of :class:`bayes_gmm.BayesianGMM` (the same names)."""

    n_components: int = _minimum(1)
    covariance_type: Literal["full", "tied", "diag", "spherical"] = "full"
    init_params: Literal["k-means++", "random", "random_from_data"] = "k-means++"
    n_init: int = _minimum(1, default=1)
    max_iter: int = _minimum(0, default=100)
    tol: float = _minimum(0.0, default=1e-6)
    chunk_size: int | None = _minimum(1, default=None)

    def estimator_kwargs(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class PriorConfig:
    """Hyperparameters, scikit-learn's names; a key left out takes the default prior's value.

    Shapes: ``weight_concentration_prior`` a number or K numbers; ``mean_prior`` D numbers;
    ``covariance_prior`` a D x D matrix (full, tied), D numbers (diag) or a number
    (spherical). See :func:`bayes_gmm.default_prior`.
    """

    weight_concentration_prior: float | Vector | None = None
    mean_prior: Vector | None = None
    mean_precision_prior: float | None = None
    degrees_of_freedom_prior: float | None = None
    covariance_prior: float | Vector | Matrix | None = None

    def estimator_kwargs(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


# The ways to reach the posterior (bayes_gmm.posterior.METHODS; spelled out here so that
# reading a config never imports NumPyro).
PosteriorMethod = Literal["nuts", "gibbs", "laplace"]


@dataclass(frozen=True)
class PosteriorConfig:
    """Sampling the posterior after the MAP fit: the arguments of
    :meth:`bayes_gmm.BayesianGMM.sample_posterior` (the same names), and how to summarise.

    Left out of a config, no posterior is sampled. ``compare_methods`` runs further methods
    on the same data, prior and MAP, each written beside the main one with its name as a
    suffix (``posterior_gibbs.nc``, ...): two independent routes to one posterior agreeing
    is the strongest check either has.
    """

    method: PosteriorMethod = "nuts"
    num_chains: int = _minimum(1, default=4)
    num_warmup: int = _minimum(0, default=500)  # per chain; unused by "laplace"
    num_samples: int = _minimum(1, default=1000)  # kept draws per chain
    thinning: int = _minimum(1, default=1)  # steps per kept draw
    init_jitter: float = _minimum(0.0, default=0.0)  # scatter of the starts around the MAP
    init: Literal["map", "default"] = "map"  # NUTS only: start at the MAP or NumPyro's init
    hdi_prob: float = 0.89  # mass of the highest density intervals in tables and figures
    log_likelihood: bool = True  # keep the pointwise log likelihood (C x S x N, for LOO)
    compare_methods: tuple[PosteriorMethod, ...] = ()

    def sampler_kwargs(self) -> dict:
        """Keyword arguments of ``sample_posterior`` (all but the method)."""
        return {name: getattr(self, name) for name in (
            "num_chains", "num_warmup", "num_samples", "thinning", "init_jitter", "init",
            "log_likelihood")}

    @property
    def methods(self) -> tuple[str, ...]:
        """The main method first, then the compared ones."""
        return (self.method, *self.compare_methods)

    def _check(self, where: _Where) -> None:
        if not 0 < self.hdi_prob < 1:
            where.fail("hdi_prob", "a probability strictly between 0 and 1",
                       _shown(self.hdi_prob), "Write e.g. hdi_prob = 0.89.")
        seen = {self.method}
        for method in self.compare_methods:
            if method in seen:
                where.fail(
                    "compare_methods", f"methods other than method = {self.method!r}, each "
                    "once", _shown(self.compare_methods),
                    f"Remove {method!r} (the main method is always run).",
                )
            seen.add(method)


@dataclass(frozen=True)
class OutputConfig:
    """What the results folder holds besides ``map.json``."""

    iteration_figures: bool = True  # one figure per EM iteration, and a grid of them
    max_iteration_figures: int = _minimum(2, default=50)  # more: evenly spaced iterations
    log_posterior_figure: bool = True
    format: Literal["png", "pdf", "svg"] = "png"
    dpi: int = _minimum(10, default=100)
    features: tuple[int, ...] = (0, 1)  # the two columns drawn (D >= 2)
    posterior_figures: bool = True  # with [posterior]: MAP vs draws, forest, trace plots

    def _check(self, where: _Where) -> None:
        if len(self.features) != 2 or self.features[0] == self.features[1]:
            where.fail(
                "features", "two different column indices", _shown(self.features),
                "Write e.g. features = [0, 1].",
            )
        if min(self.features) < 0:
            where.fail(
                "features", "indices >= 0", _shown(self.features), "Count columns from 0."
            )


# --------------------------------------------------------------------------------------
# [sensitivity]: a prior sweep after the MAP fit (bayes_gmm.sensitivity.prior_sweep)

# The spellings of one grid axis; a bare list stands for `values`.
GRID_SPACINGS = ("values", "geomspace", "linspace")


@dataclass(frozen=True)
class GridAxis:
    """The values of one swept hyperparameter, in one of three spellings::

        mean_precision_prior = [0.01, 0.1, 1.0]                    # the values themselves
        weight_concentration_prior = { geomspace = [0.001, 10.0, 16] }  # numpy.geomspace
        degrees_of_freedom_prior = { linspace = [3.0, 30.0, 10] }       # numpy.linspace

    ``geomspace`` and ``linspace`` are ``[start, stop, num]`` as NumPy spells them (both
    ends included). Whether the values are admissible for the data (> 0, degrees of
    freedom > n_features - 1) is checked after the data are loaded, by
    :func:`bayes_gmm.sensitivity.check_grid`.
    """

    # A bare value of the key (not a table) is read as {SHORTHAND: value}.
    SHORTHAND: typing.ClassVar[str] = "values"
    SHORTHAND_EXPECTED: typing.ClassVar[str] = (
        "a list of numbers, or a table { geomspace = [start, stop, num] } or "
        "{ linspace = [start, stop, num] }"
    )
    SHORTHAND_EXAMPLE: typing.ClassVar[str] = (
        "[0.01, 0.1, 1.0] or { geomspace = [0.001, 10.0, 16] }"
    )

    values: Vector | None = None
    geomspace: Vector | None = None
    linspace: Vector | None = None

    def as_array(self):
        """The values as a float64 NumPy array (in the order written)."""
        import numpy as np

        if self.values is not None:
            return np.asarray(self.values, dtype=np.float64)
        spacing = np.geomspace if self.geomspace is not None else np.linspace
        start, stop, num = self.geomspace if self.geomspace is not None else self.linspace
        return spacing(start, stop, int(num)).astype(np.float64)

    def __len__(self) -> int:
        if self.values is not None:
            return len(self.values)
        return int((self.geomspace or self.linspace)[2])

    def _check(self, where: _Where) -> None:
        given = [name for name in GRID_SPACINGS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ConfigError(
                f"{where.prefix}: expected exactly one of {', '.join(GRID_SPACINGS)}; got "
                f"{', '.join(given) if given else 'none'} (in {where.source}). Write e.g. "
                f"{where.prefix.rsplit('.', 1)[-1]} = {self.SHORTHAND_EXAMPLE}.",
                key=where.prefix, source=where.source,
            )
        spacing = given[0]
        if spacing == "values":
            return
        start, stop, num = (getattr(self, spacing) + (None, None, None))[:3]
        fix = f"Write e.g. {spacing} = [0.001, 10.0, 16] (start, stop, number of values)."
        if len(getattr(self, spacing)) != 3:
            where.fail(spacing, "three numbers [start, stop, num]",
                       _shown(getattr(self, spacing)), fix)
        if not (float(num).is_integer() and num >= 1):
            where.fail(spacing, "a whole number of values >= 1 as the third number",
                       _shown(getattr(self, spacing)), fix)
        if spacing == "geomspace" and not (start > 0 and stop > 0):
            where.fail(spacing, "positive start and stop (a geometric grid)",
                       _shown(getattr(self, spacing)), fix)


@dataclass(frozen=True)
class SweepGrid:
    """``[sensitivity.grid]``: one key per swept hyperparameter (the names of
    :data:`bayes_gmm.sensitivity.HYPERPARAMETERS`), each a :class:`GridAxis`."""

    weight_concentration_prior: GridAxis | None = None
    mean_precision_prior: GridAxis | None = None
    degrees_of_freedom_prior: GridAxis | None = None
    covariance_prior_scale: GridAxis | None = None

    def axes(self) -> dict:
        """{hyperparameter: GridAxis} of the keys given, in the order of the fields."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}

    def arrays(self) -> dict:
        """{hyperparameter: float64 array} of the keys given."""
        return {name: axis.as_array() for name, axis in self.axes().items()}

    def _check(self, where: _Where) -> None:
        if not self.axes():
            names = ", ".join(f.name for f in dataclasses.fields(self))
            raise ConfigError(
                f"{where.prefix}: expected at least one hyperparameter to sweep, among "
                f"{names}; got none (in {where.source}). Add e.g. "
                "weight_concentration_prior = { geomspace = [0.001, 10.0, 16] }.",
                key=where.prefix, source=where.source,
            )


@dataclass(frozen=True)
class SensitivityConfig:
    """A prior sweep after the MAP fit (:func:`bayes_gmm.sensitivity.prior_sweep`) and,
    with a ``[posterior]`` section, power-scaling sensitivity of the posterior
    (:func:`bayes_gmm.sensitivity.power_scaling_sensitivity`). Left out: neither.

    ``combine = "cross"`` fits every combination of the grid's values; ``"zip"`` the i-th
    values together (equal lengths). ``start = "map"`` starts every fit of the grid at
    the config's MAP estimate (so differences come from the prior alone); the other
    values seed anew as ``[model] init_params`` does. EM settings (``max_iter``, ``tol``,
    ``chunk_size``) are those of ``[model]``.
    """

    grid: SweepGrid
    combine: Literal["cross", "zip"] = "cross"
    weight_threshold: float = _minimum(0.0, default=0.01)  # effective: weight above this
    start: Literal["map", "k-means++", "random", "random_from_data"] = "map"
    power_scaling: bool = True  # with [posterior]: power_scaling.csv

    @property
    def n_points(self) -> int:
        sizes = [len(axis) for axis in self.grid.axes().values()]
        return math.prod(sizes) if self.combine == "cross" else sizes[0]

    def _check(self, where: _Where) -> None:
        if self.weight_threshold >= 1:
            where.fail("weight_threshold", "a weight in [0, 1)",
                       _shown(self.weight_threshold), "Write e.g. weight_threshold = 0.01.")
        if self.combine == "zip":
            lengths = {name: len(axis) for name, axis in self.grid.axes().items()}
            if len(set(lengths.values())) > 1:
                where.fail(
                    "combine", "grid keys of equal length with combine = \"zip\" (the "
                    "i-th values form point i)", f"\"zip\" with lengths {lengths}",
                    "Make the lengths equal, or write combine = \"cross\" for every "
                    "combination.",
                )


def _check_sensitivity(config: ExperimentConfig, where: _Where) -> None:
    """Power scaling reads the pointwise log likelihood of the posterior draws."""
    spec, posterior = config.sensitivity, config.posterior
    if spec is None or posterior is None or not spec.power_scaling:
        return
    if not posterior.log_likelihood:
        where.inside("sensitivity").fail(
            "power_scaling", "power_scaling = false when [posterior] has log_likelihood "
            "= false (power scaling needs the pointwise log likelihood)", "true",
            "Set log_likelihood = true under [posterior], or power_scaling = false.",
        )


# --------------------------------------------------------------------------------------
# [selection]: choosing K (bayes_gmm.selection.select_k, occupied_components)

# bayes_gmm.selection.CRITERIA, spelled out so that reading a config imports no JAX.
SELECTION_CRITERIA = ("bic", "icl", "aic", "heldout", "loo")
# The covariance types [model] accepts; [selection] takes one or a list of them.
COVARIANCE_TYPES = typing.get_args(typing.get_type_hints(ModelConfig)["covariance_type"])


@dataclass(frozen=True)
class OccupiedConfig:
    """``[selection.occupied]``: a sparse overfitted mixture with ``k_max`` components and
    a Dirichlet concentration ``weight_concentration_prior`` (e0, well below 1) on its
    weights, sampled by the conjugate Gibbs sampler; the posterior of the number of
    occupied components (:func:`bayes_gmm.selection.occupied_components`). The other
    hyperparameters are ``[prior]``'s (the defaults built for ``k_max`` components).

    ``reference = [low, high]`` (optional) is a range of the number of components to
    compare with, e.g. a published one (``[3, 7]`` for the galaxy velocities, Richardson
    and Green 1997): it is shaded on ``occupied_components.png``, and ``selection.json``
    gives the posterior probability of that range."""

    k_max: int = _minimum(2, default=10)
    weight_concentration_prior: float = 0.01
    num_chains: int = _minimum(1, default=4)
    num_warmup: int = _minimum(0, default=1000)
    num_samples: int = _minimum(1, default=2000)
    thinning: int = _minimum(1, default=1)
    reference: tuple[int, ...] | None = field(default=None, metadata={"example": "[3, 7]"})

    def _check(self, where: _Where) -> None:
        if not self.weight_concentration_prior > 0:
            where.fail("weight_concentration_prior", "a number > 0 (well below 1, e.g. 0.01, "
                       "for a sparse mixture)", _shown(self.weight_concentration_prior),
                       "Write e.g. weight_concentration_prior = 0.01.")
        if self.reference is not None and not (
                len(self.reference) == 2 and 1 <= self.reference[0] <= self.reference[1]):
            where.fail("reference", "two numbers of components [low, high] with "
                       "1 <= low <= high", _shown(self.reference),
                       "Write e.g. reference = [3, 7], or leave it out.")


@dataclass(frozen=True)
class SelectionConfig:
    """``[selection]``: every criterion for choosing K on the config's data
    (:func:`bayes_gmm.selection.select_k`), and with ``[selection.occupied]`` the
    posterior of the number of occupied components of a sparse overfitted mixture.

    ``ks`` is a list of K, or an integer k for 1..k. ``covariance_type`` is one type or a
    list of them (``["full", "diag", "spherical", "tied"]``: every K of every type, the
    best model over all of them, as mclust's ``Mclust`` searches); left out, ``[model]``'s.
    ``[selection.occupied]`` takes it when it is one type, ``[model]``'s otherwise.
    ``posterior``, ``num_chains``, ``num_warmup`` and ``num_samples`` are the sampler of
    ``"loo"`` (one posterior per K and type). The other EM settings (``n_init``,
    ``max_iter``, ``tol``) are ``[model]``'s and the prior overrides ``[prior]``'s, the
    same for every K (so ``weight_concentration_prior`` must be one number).
    ``[model] n_components`` stays the K of the main MAP fit (``map.json`` and its
    figures): the K to look at in detail.
    Whether the Ks fit the data (at most N points, or N minus the validation points with
    ``"heldout"``) is checked once the data are loaded, before any fit.
    """

    ks: int | tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    # One type, or a list (each once); None: [model]'s covariance_type.
    covariance_type: str | tuple[str, ...] | None = field(
        default=None, metadata={"example": '"full", or a list of several of "full", "tied", '
                                           '"diag", "spherical", e.g. ["full", "diag"]'})
    criteria: tuple[str, ...] = SELECTION_CRITERIA
    validation_fraction: float = 0.25  # share held out for "heldout"
    posterior: PosteriorMethod = "gibbs"  # sampler of "loo"
    num_chains: int = _minimum(1, default=4)
    num_warmup: int = _minimum(0, default=500)
    num_samples: int = _minimum(1, default=1000)
    occupied: OccupiedConfig | None = None  # None: no sparse overfitted mixture

    @property
    def k_values(self) -> list[int]:
        """The Ks, ascending, without duplicates."""
        ks = range(1, self.ks + 1) if isinstance(self.ks, int) else self.ks
        return sorted(set(ks))

    def covariance_types(self, model: ModelConfig) -> str | list[str]:
        """What ``select_k`` gets as ``covariance_type``: the one type (a string; left
        out: ``model``'s) or the list of them."""
        if self.covariance_type is None:
            return model.covariance_type
        if isinstance(self.covariance_type, str):
            return self.covariance_type
        return list(self.covariance_type)

    def _check(self, where: _Where) -> None:
        ks = (self.ks,) if isinstance(self.ks, int) else self.ks
        if min(ks) < 1:
            where.fail("ks", "numbers of components >= 1 (a list, or an integer k for "
                       "1..k)", _shown(self.ks), "Write e.g. ks = [1, 2, 3, 4, 5, 6].")
        if self.covariance_type is not None:
            _check_covariance_types(self.covariance_type, where)
        for criterion in self.criteria:
            if criterion not in SELECTION_CRITERIA:
                close = difflib.get_close_matches(criterion, SELECTION_CRITERIA, n=1)
                hint = f"Did you mean {close[0]!r}? " if close else ""
                where.fail("criteria", "a list of criteria among "
                           + ", ".join(map(repr, SELECTION_CRITERIA)), _shown(self.criteria),
                           f"{hint}Remove {criterion!r} or fix its name.")
        if len(set(self.criteria)) != len(self.criteria):
            where.fail("criteria", "each criterion once", _shown(self.criteria),
                       "Remove the repeated names.")
        if not 0 < self.validation_fraction < 1:
            where.fail("validation_fraction", "a share of the points strictly between 0 "
                       "and 1", _shown(self.validation_fraction),
                       "Write e.g. validation_fraction = 0.25.")


def _check_covariance_types(value: str | tuple[str, ...], where: _Where) -> None:
    """Known names, each once (the list may not be empty: the loader refuses [])."""
    names = (value,) if isinstance(value, str) else value
    allowed = ", ".join(map(repr, COVARIANCE_TYPES))
    expected = f"one of {allowed}, or a list of them (each once)"
    for name in names:
        if name not in COVARIANCE_TYPES:
            close = difflib.get_close_matches(name, COVARIANCE_TYPES, n=1)
            hint = f"Did you mean {close[0]!r}? " if close else ""
            where.fail("covariance_type", expected, _shown(value),
                       f'{hint}Write e.g. covariance_type = ["full", "diag", "spherical", '
                       '"tied"], or one of them.')
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        where.fail("covariance_type", expected, _shown(value),
                   f"Remove the repeated {', '.join(map(repr, repeated))}.")


def _check_selection(config: ExperimentConfig, where: _Where) -> None:
    """select_k takes one Dirichlet concentration for every K (K changes)."""
    if config.selection is not None and isinstance(
            config.prior.weight_concentration_prior, tuple):
        where.inside("prior").fail(
            "weight_concentration_prior", "one number with a [selection] section (the "
            "same for every K)", _shown(config.prior.weight_concentration_prior),
            "Write e.g. weight_concentration_prior = 1.0, or leave it out.",
        )


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: the whole config file."""

    name: str
    data: DataConfig
    model: ModelConfig
    seed: int = _minimum(0, default=0)
    output_dir: str = "results"
    # A folder, false (off) or true (the default folder): JAX's persistent compilation
    # cache for this run, set by the CLI before anything compiles.
    compilation_cache: Path | bool = field(
        default=True, metadata={"example": '"~/.cache/bayes_gmm/jax" (a folder) or false'})
    prior: PriorConfig = PriorConfig()
    posterior: PosteriorConfig | None = None  # None: the MAP only
    output: OutputConfig = OutputConfig()
    sensitivity: SensitivityConfig | None = None  # None: no prior sweep
    selection: SelectionConfig | None = None  # None: no choosing K

    def to_dict(self) -> dict:
        """Plain JSON-ready values (lists for tuples, strings for paths)."""
        return _plain(dataclasses.asdict(self))

    def _check(self, where: _Where) -> None:
        if not NAME_PATTERN.match(self.name):
            where.fail(
                "name", "a folder name of letters, digits, '.', '_' or '-', not starting "
                "with '.' or '-'", repr(self.name), 'Write e.g. name = "old_faithful_k2".',
            )
        if self.seed >= 2**32:
            where.fail("seed", "an integer in [0, 2**32)", str(self.seed), "Use a smaller seed.")
        if isinstance(self.compilation_cache, Path) and (
                self.compilation_cache.exists() and not self.compilation_cache.is_dir()):
            where.fail(
                "compilation_cache", "a folder, true or false",
                f"{str(self.compilation_cache)!r}, which is a file",
                "Name a folder (created if missing), or write false to turn the cache off.",
            )
        _check_prior_shapes(self, where)
        _check_sensitivity(self, where)
        _check_selection(self, where)
        d = self.data.n_features
        if d is not None and d >= 2 and max(self.output.features) >= d:
            where.inside("output").fail(
                "features", f"column indices below n_features = {d}",
                _shown(self.output.features), f"Pick two of 0 .. {d - 1}.",
            )


def _check_prior_shapes(config: ExperimentConfig, where: _Where) -> None:
    """Shapes of the prior that the config alone determines (K always, D when known)."""
    prior, model = config.prior, config.model
    k, d, kind = model.n_components, config.data.n_features, model.covariance_type
    inside = where.inside("prior")
    alpha = prior.weight_concentration_prior
    if isinstance(alpha, tuple) and len(alpha) != k:
        inside.fail(
            "weight_concentration_prior",
            f"a number or a list of n_components = {k} numbers", _shown(alpha),
            f"Give one number per component, or a single number for all {k}.",
        )
    if prior.mean_prior is not None and d is not None and len(prior.mean_prior) != d:
        inside.fail(
            "mean_prior", f"a list of n_features = {d} numbers", _shown(prior.mean_prior),
            "Give one number per feature of the data.",
        )
    psi = prior.covariance_prior
    if psi is None:
        return
    depth = 0 if isinstance(psi, float) else 2 if isinstance(psi[0], tuple) else 1
    expected_depth = {"full": 2, "tied": 2, "diag": 1, "spherical": 0}[kind]
    words = {
        2: f"a {d or 'D'} x {d or 'D'} matrix (a list of lists of numbers)",
        1: f"a list of {d or 'D'} numbers (one variance per feature)",
        0: "a single number (one variance)",
    }[expected_depth]
    shown = _shown(psi)
    fix = f"Give {words}, or leave covariance_prior out to use the default."
    if depth != expected_depth:
        inside.fail("covariance_prior", f"{words} for covariance_type = {kind!r}", shown, fix)
    if depth == 2:
        size = len(psi) if d is None else d
        if len(psi) != size or any(len(row) != size for row in psi):
            inside.fail("covariance_prior", f"{words} for covariance_type = {kind!r}",
                        shown, fix)
    if depth == 1 and d is not None and len(psi) != d:
        inside.fail("covariance_prior", f"{words} for covariance_type = {kind!r}", shown, fix)


# --------------------------------------------------------------------------------------
# Loading


def load_config(path) -> ExperimentConfig:
    """Read and check a TOML experiment config.

    Parameters
    ----------
    path : str or path-like
        The config file. A CSV path inside it is taken relative to the file's folder.

    Returns
    -------
    ExperimentConfig

    Raises
    ------
    ConfigError
        The file is missing, not valid TOML, or does not fit the schema.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {source!r} (looked in {str(path.resolve().parent)!r}). "
            "Check the path, e.g. bayes-gmm run configs/em_walkthrough.toml.",
            source=source,
        )
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            f"{source} is not valid TOML: {err}. Fix the syntax there "
            "(strings need quotes, tables are [name], arrays are [1, 2]).",
            source=source,
        ) from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{source} is not UTF-8 text ({err}); save it as UTF-8.", source=source
        ) from None
    return parse_config(table, base_dir=path.parent, source=source)


def parse_config(table: dict, base_dir=".", source: str = "<config>") -> ExperimentConfig:
    """Check an already parsed TOML table (a dict) against the schema.

    Parameters
    ----------
    table : dict
        As returned by :func:`tomllib.loads`.
    base_dir : str or path-like, default "."
        Folder that relative CSV paths are taken from.
    source : str, default "<config>"
        Named in error messages.
    """
    where = _Where(source, "", Path(base_dir))
    return _build(ExperimentConfig, table, where)


class _Where:
    """Where in the file the loader is (for messages), and how to fail there."""

    def __init__(self, source: str, prefix: str, base_dir: Path):
        self.source, self.prefix, self.base_dir = source, prefix, base_dir

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def inside(self, name: str) -> _Where:
        return _Where(self.source, self.key(name), self.base_dir)

    def fail(self, name: str, expected: str, got: str, fix: str) -> typing.NoReturn:
        key = self.key(name)
        raise ConfigError(
            f"{key}: expected {expected}; got {got} (in {self.source}). {fix}",
            key=key,
            source=self.source,
        )


def _build(cls, table: dict, where: _Where):
    """An instance of dataclass ``cls`` from a TOML table, every field converted."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = [name for name in table if name not in fields]
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, list(fields), n=1)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        section = f"[{where.prefix}]" if where.prefix else "the top level"
        raise ConfigError(
            f"unknown key {where.key(name)!r} (in {where.source}): {section}"
            f"{_variant(cls)} takes {', '.join(fields)}. {hint}Remove it or fix its name.",
            key=where.key(name),
            source=where.source,
        )
    values = {}
    for name, f in fields.items():
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                hint = hints[name]
                section = f"under [{where.prefix}]" if where.prefix else "at the top"
                expected = _describe(hint)
                if "minimum" in f.metadata:
                    expected += f" >= {f.metadata['minimum']}"
                if _is_section(hint):
                    add = f"Add a [{where.key(name)}] section"
                else:
                    add = f"Add e.g. {name} = {_example(hint)} {section}"
                raise ConfigError(
                    f"missing key {where.key(name)!r} (in {where.source}): expected "
                    f"{expected}. {add}.",
                    key=where.key(name),
                    source=where.source,
                )
            continue
        minimum = f.metadata.get("minimum")
        default = f.default if f.default not in (dataclasses.MISSING, None, ()) else None
        example = f.metadata.get("example") or (
            _example(hints[name]) if default is None else _toml(default))
        if table[name] == [] and f.default == ():
            # An empty list where the default is one (compare_methods = []); elsewhere an
            # array must have items, so _try_convert refuses empty ones.
            values[name] = ()
            continue
        values[name] = _convert(table[name], hints[name], name, where, example)
        if minimum is not None and values[name] is not None and values[name] < minimum:
            where.fail(
                name, f"{_describe(hints[name])} >= {minimum}", _shown(table[name]),
                f"Write e.g. {name} = {minimum if default is None else example}.",
            )
    instance = cls(**values)
    if hasattr(instance, "_check"):
        instance._check(where)
    return instance


def _convert(value, hint, name: str, where: _Where, example: str):
    """``value`` as type ``hint``, or a ConfigError naming ``where.key(name)``."""
    if _is_section(hint):
        section = _section_class(hint)
        shorthand = getattr(section, "SHORTHAND", None)
        if shorthand is not None and not isinstance(value, dict):
            # A section with a shorthand (GridAxis) may be written as a bare list.
            if not isinstance(value, list):
                where.fail(name, section.SHORTHAND_EXPECTED, _shown(value),
                           f"Write e.g. {name} = {section.SHORTHAND_EXAMPLE}.")
            value = {shorthand: value}
        if not isinstance(value, dict):
            where.fail(
                name, "a table", _shown(value),
                f"Write it as a section: [{where.key(name)}] on its own line, then "
                "key = value lines.",
            )
        if hint is DataConfig:
            return _build_data(value, where.inside(name))
        return _build(_section_class(hint), value, where.inside(name))
    converted = _try_convert(value, hint, where)
    if converted is _FAIL:
        where.fail(name, _describe(hint), _shown(value), f"Write e.g. {name} = {example}.")
    return converted


_FAIL = object()


def _try_convert(value, hint, where: _Where):
    """``value`` as ``hint``, or ``_FAIL``; never raises for a wrong type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            if option is type(None):
                continue
            converted = _try_convert(value, option, where)
            if converted is not _FAIL:
                return converted
        return _FAIL
    if origin is Literal:
        return value if isinstance(value, str) and value in args else _FAIL
    if origin is tuple:
        if not isinstance(value, list) or not value:
            return _FAIL
        items = [_try_convert(item, args[0], where) for item in value]
        return _FAIL if any(item is _FAIL for item in items) else tuple(items)
    if hint is bool:
        return value if isinstance(value, bool) else _FAIL
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _FAIL
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok and math.isfinite(value) else _FAIL
    if hint is str:
        return value if isinstance(value, str) else _FAIL
    if hint is Path:
        if not isinstance(value, str) or not value:
            return _FAIL
        path = Path(value).expanduser()
        return path if path.is_absolute() else (where.base_dir / path).resolve()
    raise TypeError(f"config schema has an unsupported annotation {hint!r}")  # a bug here


def _build_data(table, where: _Where) -> DataConfig:
    """Pick the dataclass of [data] by its ``source`` (and ``generator``), then build it."""
    sources = ", ".join(map(repr, DATA_KINDS))
    if "source" not in table:
        raise ConfigError(
            f"missing key 'data.source' (in {where.source}): expected one of {sources}. "
            'Add e.g. source = "synthetic" under [data].',
            key="data.source",
            source=where.source,
        )
    source = table["source"]
    if source not in DATA_KINDS:
        where.fail("source", f"one of {sources}", _shown(source),
                   'Write e.g. source = "builtin" with name = "old_faithful".')
    generators = DATA_KINDS[source]
    if None in generators:
        return _build(generators[None], table, where)
    generator = table.get("generator", "two_gaussians")
    if generator not in generators:
        where.fail("generator", f"one of {', '.join(map(repr, generators))}",
                   _shown(generator), 'Write e.g. generator = "two_gaussians".')
    return _build(generators[generator], table, where)


# --------------------------------------------------------------------------------------
# Words for messages


def _section_class(hint):
    """The dataclass of a section's annotation (``X`` or ``X | None``), else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = options[0] if len(options) == 1 else None
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _is_section(hint) -> bool:
    return hint is DataConfig or _section_class(hint) is not None


def _variant(cls) -> str:
    if cls in (TwoGaussiansData, MixtureData):
        return f" with generator = {cls.generator!r}"
    if cls in (BuiltinData, CsvData):
        return f" with source = {cls.source!r}"
    return ""


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_section(hint):
        return "a table"
    if origin in (typing.Union, types.UnionType):
        words = [_describe(a) for a in args if a is not type(None)]
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if hint == Tensor3:
        return "a list of matrices (lists of lists of numbers)"
    if hint == Matrix:
        return "a matrix (a list of lists of numbers)"
    if origin is tuple and typing.get_origin(args[0]) is Literal:
        return "a list of methods among " + ", ".join(map(repr, typing.get_args(args[0])))
    if origin is tuple:
        return {float: "a list of numbers", int: "a list of integers",
                str: "a list of strings"}[args[0]]
    return {bool: "true or false", int: "an integer", float: "a finite number",
            str: "a string", Path: "a file path (a string)"}[hint]


def _example(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _example(next(a for a in args if a is not type(None)))
    if origin is Literal:
        return f'"{args[0]}"'
    if hint == Tensor3:
        return "[[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.0], [0.0, 0.5]]]"
    if hint == Matrix:
        return "[[1.0, 0.0], [0.0, 1.0]]"
    if origin is tuple and typing.get_origin(args[0]) is Literal:
        return "[" + ", ".join(f'"{a}"' for a in typing.get_args(args[0])[1:]) + "]"
    if origin is tuple:
        return {float: "[0.5, 0.5]", int: "[0, 1]", str: '["eruptions", "waiting"]'}[args[0]]
    return {bool: "true", int: "2", float: "0.5", str: '"text"',
            Path: '"data/points.csv"'}.get(hint, "...")


def _shown(value) -> str:
    """A value as the user wrote it, with its TOML kind when that explains the problem."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", tuple: "an array", dict: "a table"}
    text = repr(_plain(value))
    if len(text) > 80:
        text = text[:77] + "..."
    kind = kinds.get(type(value))
    return f"{text} ({kind})" if kind else text


def _toml(value) -> str:
    """A default value as it would be written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


__all__ = [
    "BuiltinData",
    "ConfigError",
    "CsvData",
    "DataConfig",
    "ExperimentConfig",
    "GridAxis",
    "MixtureData",
    "ModelConfig",
    "OccupiedConfig",
    "OutputConfig",
    "PosteriorConfig",
    "PriorConfig",
    "SelectionConfig",
    "SensitivityConfig",
    "SweepGrid",
    "TwoGaussiansData",
    "load_config",
    "parse_config",
]
