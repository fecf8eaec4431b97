"""``BayesianGMM``: the scikit-learn style façade over the MAP core.

This is the one user-facing layer of the MAP fit. It validates every argument before any
work is done (messages name the parameter, what was expected, what came and the fix),
converts data and results between NumPy and JAX, and keeps scikit-learn's conventions:
``__init__`` only stores hyperparameters, fitted attributes end in ``_``, and
``get_params``/``set_params``/``sklearn.base.clone`` work. scikit-learn itself is not a
dependency; the estimator implements the protocol.
"""

from __future__ import annotations

import hashlib
import inspect
import warnings

import jax
import numpy as np

from bayes_gmm.checks import (
    as_float_array,
    check_choice,
    check_data,
    check_feature_names,
    check_float,
    check_int,
    check_is_fitted,
    data_scale,
    feature_names,
    seed_from,
)
from bayes_gmm.covariance import KINDS, as_full_covariances
from bayes_gmm.em import INIT_METHODS, GMMParams, e_step, fit_map
from bayes_gmm.exceptions import ConvergenceWarning
from bayes_gmm.priors import check_covariance_type, check_n_components, default_prior
from bayes_gmm.streaming import ChunkedSource, is_chunked, points_with_moments


class BayesianGMM:
    """Gaussian mixture fitted by its maximum a posteriori (MAP) estimate.

    The prior is conjugate: ``pi ~ Dirichlet(alpha)`` on the weights and a
    Normal-Inverse-Wishart (or its diagonal/spherical/tied analogue) on each component,
    with the data-dependent defaults of Fraley & Raftery (2007); see
    :func:`bayes_gmm.default_prior`. EM maximises the log posterior density, normalising
    constants included.

    Parameters
    ----------
    n_components : int, default 1
        K, the number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
    tol : float, default 1e-6
        EM stops when the log posterior changes by at most ``tol`` times its magnitude.
    max_iter : int, default 100
        EM steps at most.
    n_init : int, default 1
        Independent initialisations, run in parallel; the highest log posterior wins.
    init_params : {"k-means++", "random", "random_from_data"}, default "k-means++"
        How to start: k-means++ seeding, random soft responsibilities (diffuse start), or
        K distinct data points as centres.
    weights_init : array of shape (n_components,), optional
    means_init : array of shape (n_components, n_features), optional
    covariances_init : array, optional
        Starting values, shapes as ``covariances_``. Any subset may be given; given means
        alone assign the points to the nearest mean and the M-step fills in the rest.
    weight_concentration_prior : float or array of shape (n_components,), optional
        alpha; default 1 (flat on the simplex). Below 1 empties surplus components.
    mean_prior : array of shape (n_features,), optional
        m0; default the data mean.
    mean_precision_prior : float, optional
        kappa0; default 0.01.
    degrees_of_freedom_prior : float, optional
        nu0 > n_features - 1; default n_features + 2.
    covariance_prior : float or array, optional
        Psi0; default ``cov(X) / K ** (2 / D)`` (shape as for ``covariances_``, one
        matrix for full and tied).
    random_state : int, numpy.random.Generator, RandomState or None, default None
        Seed of the initialisation (and of :meth:`sample`).
    keep_history : bool, default False
        Keep the parameters of every EM step in ``params_history_``.
    chunk_size : int, optional
        Rows per block of the E-step (memory against speed); chosen automatically. For
        data streamed from a chunked source, the rows read and processed at a time
        (default 65536): memory is O(chunk_size x K x D).

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
        full (K, D, D), tied (D, D), diag (K, D), spherical (K,).
    converged_ : bool
    n_iter_ : int
        EM steps taken by the best initialisation.
    lower_bound_ : float
        The log posterior ``log p(X | theta) + log p(theta)`` at the estimate (the name is
        scikit-learn's; here it is the objective itself, not a bound).
    log_likelihood_ : float
        ``log p(X | theta)`` at the estimate.
    log_posterior_history_ : ndarray of shape (n_iter_ + 1,)
        The log posterior after 0, 1, ..., n_iter_ EM steps.
    params_history_ : GMMParams or None
        With ``keep_history=True``, the parameters after every step (leading axis
        ``n_iter_ + 1``).
    dead_components_ : ndarray of bool, shape (n_components,)
        Components whose weight is exactly zero (possible when alpha < 1).
    prior_ : GMMPrior
        The prior used, defaults filled in.
    params_ : GMMParams
        ``(weights_, means_, covariances_)``, for the functions of the pure core.
    seed_ : int
        The integer seed the initialisation used.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Column names, when fitted on a DataFrame with string column names.

    References
    ----------
    Fraley, C. and Raftery, A. E. (2007). Bayesian regularization for normal mixture
    estimation and model-based clustering. Journal of Classification 24, 155-181.

    Examples
    --------
    >>> from bayes_gmm import BayesianGMM, datasets
    >>> X = datasets.old_faithful().to_numpy()
    >>> gmm = BayesianGMM(n_components=2, random_state=0).fit(X)
    >>> gmm.predict(X[:3]).shape
    (3,)
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-6,
        max_iter=100,
        n_init=1,
        init_params="k-means++",
        weights_init=None,
        means_init=None,
        covariances_init=None,
        weight_concentration_prior=None,
        mean_prior=None,
        mean_precision_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        keep_history=False,
        chunk_size=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.covariances_init = covariances_init
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_prior = mean_prior
        self.mean_precision_prior = mean_precision_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.keep_history = keep_history
        self.chunk_size = chunk_size

    # ----------------------------------------------------------------------------------
    # Fitting

    def fit(self, X, y=None):
        """Find the MAP estimate of the mixture for ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or a chunked source
            Data larger than memory are streamed, ``chunk_size`` rows at a time, from a
            ``numpy.memmap`` (``numpy.load(path, mmap_mode="r")``), a path to a ``.npy``
            file or to a directory of ``.npy`` shards (read in sorted order), a list of
            arrays, or a function returning a fresh iterator of arrays; see
            :mod:`bayes_gmm.streaming`. The default prior then comes from one pass of
            moments, and the fit makes one pass per EM step.
        y : ignored

        Returns
        -------
        self
        """
        if is_chunked(X):
            x = names = None  # nothing is held in memory
            settings = self._checked_settings()
            data = ChunkedSource(X, settings["chunk_size"])
            n_samples, mean, cov = data.moments()
            n_features, points = data.n_features, points_with_moments(n_samples, mean, cov)
        else:
            x = data = points = check_data(X)
            names = feature_names(X)
            n_samples, n_features = x.shape
            settings = self._checked_settings()
        n_components = settings["n_components"]
        if n_samples < n_components:
            raise ValueError(
                f"X has {n_samples} sample(s) but n_components={n_components}: a mixture "
                "needs at least as many points as components. Pass more data or lower "
                "n_components."
            )
        prior = default_prior(
            points,
            n_components,
            settings["covariance_type"],
            weight_concentration_prior=self.weight_concentration_prior,
            mean_prior=self.mean_prior,
            mean_precision_prior=self.mean_precision_prior,
            degrees_of_freedom_prior=self.degrees_of_freedom_prior,
            covariance_prior=self.covariance_prior,
        )
        start = self._checked_initial_values(n_components, n_features)
        seed = seed_from(self.random_state)
        # Data far from unit scale are fitted divided by a power of two (exact), and the
        # estimate is mapped back below; checks.data_scale says why (or why it cannot be).
        # (Streamed data are fitted as they come.)
        scale = 1.0 if x is None else data_scale(
            x, x.dtype if jax.config.jax_enable_x64 else np.float32
        )

        params, info = fit_map(
            jax.random.key(seed),
            data if scale == 1.0 else (x / scale).astype(x.dtype),
            prior if scale == 1.0 else _scaled_prior(prior, scale),
            start if scale == 1.0 or start is None else _scaled_params(start, 1 / scale),
            covariance_type=settings["covariance_type"],
            init=settings["init_params"],
            n_init=settings["n_init"],
            max_iter=settings["max_iter"],
            tol=settings["tol"],
            keep_history=settings["keep_history"],
            chunk_size=settings["chunk_size"],
        )
        params, info = jax.device_get((params, info))
        if scale != 1.0:
            params, info = _unscaled_fit(params, info, scale, x.shape,
                                         settings["covariance_type"])
        n_iter = int(info.n_iter)
        history = np.asarray(info.history[: n_iter + 1])
        if not np.isfinite(info.log_posterior) or not all(
            np.all(np.isfinite(a)) for a in params
        ):
            raise FloatingPointError(
                f"The fit produced a non-finite log posterior ({float(info.log_posterior)}) "
                f"at EM step {n_iter}: a covariance became numerically singular in "
                f"{data.dtype if jax.config.jax_enable_x64 else 'float32'}. Enable float64 "
                "(JAX_ENABLE_X64=1, or jax.config.update('jax_enable_x64', True)), or pass "
                "a larger covariance_prior or mean_precision_prior."
            )

        self.weights_, self.means_, self.covariances_ = (np.asarray(a) for a in params)
        self.params_ = GMMParams(self.weights_, self.means_, self.covariances_)
        self.prior_ = prior
        self.converged_ = bool(info.converged)
        self.n_iter_ = n_iter
        self.lower_bound_ = float(info.log_posterior)
        self.log_likelihood_ = float(info.log_likelihood)
        self.log_posterior_history_ = history
        self.params_history_ = None
        if settings["keep_history"]:
            self.params_history_ = GMMParams(
                *(np.asarray(a[: n_iter + 1]) for a in info.params_history)
            )
        self.dead_components_ = np.asarray(info.dead)
        self._data_scale = scale
        self.seed_ = seed
        self.n_features_in_ = n_features
        self._fit_fingerprint = None if x is None else _fingerprint(x)
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

        if not self.converged_ and settings["max_iter"] > 0:
            change = abs(history[-1] - history[-2]) / abs(history[-1]) if n_iter else np.inf
            warnings.warn(
                f"EM did not converge in max_iter={settings['max_iter']} steps: the last "
                f"relative change of the log posterior was {change:.2e} > tol="
                f"{settings['tol']:g}. Increase max_iter, loosen tol, or try n_init > 1.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def fit_predict(self, X, y=None):
        """Fit, then return the most probable component of every point."""
        return self.fit(X).predict(X)

    def _checked_settings(self) -> dict:
        chunk_size = self.chunk_size
        if chunk_size is not None:
            chunk_size = check_int(chunk_size, "chunk_size", 1)
        if not isinstance(self.keep_history, bool | np.bool_):
            raise TypeError(f"keep_history must be True or False; got {self.keep_history!r}.")
        return {
            "n_components": check_n_components(self.n_components),
            "covariance_type": check_covariance_type(self.covariance_type),
            "init_params": check_choice(self.init_params, "init_params", INIT_METHODS),
            "tol": check_float(self.tol, "tol", 0.0),
            "max_iter": check_int(self.max_iter, "max_iter", 0),
            "n_init": check_int(self.n_init, "n_init", 1),
            "keep_history": bool(self.keep_history),
            "chunk_size": chunk_size,
        }

    def _checked_initial_values(self, n_components, n_features) -> GMMParams | None:
        k, d = n_components, n_features
        weights = means = covariances = None
        if self.weights_init is not None:
            weights = _finite(self.weights_init, "weights_init", (k,), "(n_components,)")
            if not np.all(weights > 0) or abs(weights.sum() - 1) > 1e-6:
                raise ValueError(
                    "weights_init must be positive and sum to 1; got "
                    f"{np.round(weights, 6).tolist()} (sum {weights.sum():.6g}). "
                    "Divide by its sum."
                )
            weights = weights / weights.sum()
        if self.means_init is not None:
            means = _finite(self.means_init, "means_init", (k, d), "(n_components, n_features)")
        if self.covariances_init is not None:
            covariances = _checked_covariances(
                self.covariances_init, self.covariance_type, k, d
            )
        if weights is None and means is None and covariances is None:
            return None
        return GMMParams(weights, means, covariances)

    # ----------------------------------------------------------------------------------
    # Using the fit

    def _checked_input(self, X) -> np.ndarray:
        check_is_fitted(self)
        check_feature_names(self, X)
        x = check_data(X)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {x.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input. Pass data with the columns "
                "used in fit."
            )
        return x

    def _e_step(self, X):
        x = self._checked_input(X)
        scale = getattr(self, "_data_scale", 1.0)
        if scale == 1.0:
            log_resp, log_density = e_step(x, self.params_, self.covariance_type)
            return np.asarray(log_resp), np.asarray(log_density)
        # In the units the fit was done in; the density of x is that of x / s over s^D.
        params = _scaled_params(self.params_, 1 / scale)
        log_resp, log_density = e_step((x / scale).astype(x.dtype), params,
                                       self.covariance_type)
        return np.asarray(log_resp), np.asarray(log_density) - x.shape[1] * np.log(scale)

    def predict_proba(self, X):
        """Responsibilities: the posterior probability of each component for each point.

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        return np.exp(self._e_step(X)[0])

    def predict(self, X):
        """The most probable component of each point, shape (n_samples,)."""
        return np.argmax(self._e_step(X)[0], axis=1)

    def score_samples(self, X):
        """``log p(x_n | theta)`` of each point at the MAP, shape (n_samples,)."""
        return self._e_step(X)[1]

    def score(self, X, y=None):
        """Mean log density per point at the MAP (higher is better)."""
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples=1):
        """Draw from the fitted mixture.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        labels : ndarray of shape (n_samples,)
            The component of each draw; draws come grouped by component.
        """
        check_is_fitted(self)
        n_samples = check_int(n_samples, "n_samples", 1)
        rng = np.random.default_rng(seed_from(self.random_state))
        counts = rng.multinomial(n_samples, self.weights_ / self.weights_.sum())
        choleskys = np.linalg.cholesky(
            as_full_covariances(
                self.covariances_, self.covariance_type, len(self.weights_), self.n_features_in_
            )
        )
        draws = [
            self.means_[k] + rng.standard_normal((count, self.n_features_in_)) @ choleskys[k].T
            for k, count in enumerate(counts)
        ]
        labels = np.repeat(np.arange(len(counts)), counts)
        return np.concatenate(draws).astype(self.means_.dtype), labels

    def sample_posterior(
        self,
        X,
        method="nuts",
        *,
        num_chains=4,
        num_warmup=500,
        num_samples=1000,
        thinning=1,
        init_jitter=0.0,
        init="map",
        progress_bar=False,
        log_likelihood=True,
    ):
        """Sample the full posterior of the same model, starting at the MAP.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The data the estimator was fitted on (the prior is the one built for them).
        method : {"nuts", "gibbs", "laplace"}, default "nuts"
            NUTS on the NumPyro model (labels summed out), the conjugate Gibbs sampler, or
            a Laplace approximation in the unconstrained parametrisation.
        num_chains, num_warmup, num_samples, thinning : int
        init_jitter : float, default 0
            Scatter the chains' starts around the MAP.
        init : {"map", "default"}, default "map"
            NUTS only: start at the MAP or at NumPyro's default initialisation.
        progress_bar : bool, default False
        log_likelihood : bool, default True
            Keep the pointwise log likelihood (for LOO); C x S x N values.

        Returns
        -------
        xarray.DataTree
            ArviZ 1.x layout; draws aligned to the MAP; see
            :func:`bayes_gmm.diagnostics.to_datatree`. Summarise it with
            :func:`bayes_gmm.compare_map_posterior`.
        """
        from bayes_gmm import posterior  # NumPyro is imported only when sampling

        x = self._checked_input(X)
        if getattr(self, "_data_scale", 1.0) != 1.0:
            raise ValueError(
                f"X has a spread of ~{self._data_scale:.3g}: the MAP fit standardises such "
                "data internally, but the posterior samplers work in the data's own units, "
                "where the log densities overflow. Divide X by a number near its spread "
                "(e.g. X / X.std()), fit again and sample that posterior."
            )
        if self._fit_fingerprint is not None and _fingerprint(x) != self._fit_fingerprint:
            warnings.warn(
                "X is not the data this estimator was fitted on: the posterior conditions on "
                "X but uses the prior built for the fit data and starts at their MAP. Fit on "
                "X first for a consistent comparison.",
                UserWarning,
                stacklevel=2,
            )
        map_info = {
            "log_posterior": self.lower_bound_,
            "n_iter": self.n_iter_,
            "converged": self.converged_,
            "history": self.log_posterior_history_,
            "dead": self.dead_components_,
            "seed": self.seed_,
        }
        key = jax.random.fold_in(jax.random.key(seed_from(self.random_state)), 1)
        return posterior.sample(
            key,
            x.astype(self.means_.dtype),
            self.prior_,
            self.params_,
            covariance_type=self.covariance_type,
            method=method,
            num_chains=num_chains,
            num_warmup=num_warmup,
            num_samples=num_samples,
            thinning=thinning,
            init_jitter=init_jitter,
            init=init,
            progress_bar=progress_bar,
            map_info=map_info,
            feature_names=getattr(self, "feature_names_in_", None),
            log_likelihood=log_likelihood,
        )

    def _n_parameters(self) -> int:
        """Free parameters of the live components: weights, means, covariances."""
        k = int(np.sum(~self.dead_components_))
        d = self.n_features_in_
        return k - 1 + k * d + KINDS[self.covariance_type].n_parameters(k, d)

    def bic(self, X):
        """Bayesian information criterion at the MAP: ``-2 log L + p log N``.

        scikit-learn's sign convention: lower is better (mclust reports the negative).
        ``log L`` is the log likelihood of ``X`` at the MAP and ``p`` counts the free
        parameters of the components with non-zero weight.
        """
        x = self._checked_input(X)
        return -2 * self.score(x) * len(x) + self._n_parameters() * np.log(len(x))

    def aic(self, X):
        """Akaike information criterion at the MAP: ``-2 log L + 2 p`` (lower is better)."""
        x = self._checked_input(X)
        return -2 * self.score(x) * len(x) + 2 * self._n_parameters()

    # ----------------------------------------------------------------------------------
    # The scikit-learn estimator protocol

    @classmethod
    def _get_param_names(cls):
        signature = inspect.signature(cls.__init__)
        return sorted(name for name in signature.parameters if name != "self")

    def get_params(self, deep=True):
        """The hyperparameters, as passed to ``__init__``."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set hyperparameters; they are checked at the next ``fit``."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                    f"Valid parameters are: {valid!r}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if not _same(value, defaults[name].default)
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, so scikit-learn is importable when it does.
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type="density_estimator", target_tags=TargetTags(required=False))


# --------------------------------------------------------------------------------------
# Helpers


def _fingerprint(x: np.ndarray) -> str:
    """A digest of the data, to notice when a posterior is asked for other data than fit."""
    return hashlib.blake2b(np.ascontiguousarray(x, np.float64).tobytes(), digest_size=16,
                           person=str(x.shape).encode()[:16]).hexdigest()


def _same(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return False
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return False


def _scaled_prior(prior, scale):
    """The prior of ``x / scale`` when ``prior`` is that of ``x`` (the model is closed
    under scaling: m0 / s, Psi0 / s^2; alpha, kappa0 and nu0 unchanged)."""
    return prior._replace(mean=prior.mean / scale, covariance=prior.covariance / scale**2)


def _scaled_params(params, factor):
    """``params`` of ``x`` mapped to those of ``factor * x`` (fields may be None), in the
    dtype they came in, computed in float64."""
    weights, means, covariances = (None if a is None else np.asarray(a) for a in params)
    return GMMParams(
        weights,
        None if means is None else (means.astype(np.float64) * factor).astype(means.dtype),
        None if covariances is None
        else (covariances.astype(np.float64) * factor**2).astype(covariances.dtype),
    )


def _unscaled_fit(params, info, scale, shape, covariance_type):
    """A fit of ``x / scale`` as the fit of ``x``: parameters scaled back, and the log
    densities corrected by the Jacobian ``-log(scale)`` per scaled coordinate: N D data
    coordinates, and of the live components' means (D each) and covariances (D (D + 1) / 2
    entries, each scaled by scale^2; D for diag, 1 for spherical, one shared matrix
    for tied)."""
    n_samples, d = shape
    alive = int(np.sum(np.asarray(params.weights) > 0))
    covariance_terms = {"full": alive * d * (d + 1), "tied": d * (d + 1),
                        "diag": alive * 2 * d, "spherical": alive * 2}[covariance_type]
    log_scale = float(np.log(scale))
    likelihood_shift = -n_samples * d * log_scale
    posterior_shift = likelihood_shift - (alive * d + covariance_terms) * log_scale
    history = info.params_history
    if history is not None:
        history = _scaled_params(history, scale)
    info = info._replace(
        log_posterior=np.float64(info.log_posterior) + posterior_shift,
        log_likelihood=np.float64(info.log_likelihood) + likelihood_shift,
        history=np.asarray(info.history, np.float64) + posterior_shift,
        init_log_posteriors=np.asarray(info.init_log_posteriors, np.float64)
        + posterior_shift,
        params_history=history,
    )
    return _scaled_params(params, scale), info


def _finite(value, name, shape, shape_text) -> np.ndarray:
    array = as_float_array(value, name, finite=False)
    if array.shape != shape:
        raise ValueError(
            f"{name} must have shape {shape_text} = {shape}; got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite; it contains NaN or inf.")
    return array


def _checked_covariances(value, covariance_type, k, d) -> np.ndarray:
    name = "covariances_init"
    shapes = {
        "full": ((k, d, d), "(n_components, n_features, n_features)"),
        "tied": ((d, d), "(n_features, n_features)"),
        "diag": ((k, d), "(n_components, n_features)"),
        "spherical": ((k,), "(n_components,)"),
    }
    shape, shape_text = shapes[covariance_type]
    array = _finite(value, f"{name} (covariance_type={covariance_type!r})", shape, shape_text)
    if covariance_type in ("full", "tied"):
        matrices = array.reshape(-1, d, d)
        if not np.allclose(matrices, np.swapaxes(matrices, 1, 2), rtol=1e-8, atol=0):
            raise ValueError(f"{name} must hold symmetric matrices; got non-symmetric ones.")
        smallest = np.linalg.eigvalsh(matrices).min()
        if not smallest > 0:
            raise ValueError(
                f"{name} must hold symmetric positive definite matrices; got smallest "
                f"eigenvalue {smallest:.3g}. Pass covariance matrices, e.g. numpy.cov(x.T)."
            )
    elif not np.all(array > 0):
        raise ValueError(f"{name} must be > 0 for covariance_type={covariance_type!r}.")
    return array


__all__ = ["BayesianGMM"]
