"""Choosing K: every standard answer, side by side, from the same model and prior.

The tutorial this project grew from leaves the number of components open ("an educated
guess, or try several values and use a validation set"). This module offers the usual
answers for one data set and a range of K, in one tidy table (:func:`select_k`), and the
Bayesian answer that needs no range (:func:`occupied_components`):

- *Information criteria at the MAP.* For every K the EM core finds the MAP estimate
  under the conjugate default prior of :func:`bayes_gmm.default_prior` (built for that
  K); BIC, AIC and ICL are computed from the log likelihood *at that MAP* (not at the
  maximum likelihood estimate, which for a mixture may not exist: the likelihood is
  unbounded when a component collapses on a point; the prior is what keeps the MAP
  finite). Sign convention of scikit-learn: lower is better.
- *Held-out log likelihood* (the tutorial's suggestion): the points are split once at
  random into a training and a validation part; each K is fitted on the training part,
  under the default prior built from the training part, and scored by the mean log
  density of the validation points. Higher is better.
- *PSIS-LOO* (Vehtari, Gelman and Gabry, 2017): for every K the posterior is sampled
  (the conjugate Gibbs sampler by default, started at the MAP), its pointwise log
  likelihood goes to ``arviz_stats.loo``, and ``arviz_stats.compare`` ranks the Ks by
  expected log pointwise predictive density (elpd, higher is better) with standard errors
  of the differences and stacking weights.
- *A sparse overfitted mixture* (Rousseau and Mengersen, 2011; Malsiner-Walli,
  Frühwirth-Schnatter and Grün, 2016): one mixture with a generous ``k_max`` and a
  Dirichlet concentration well below one on the weights. Surplus components are then
  emptied in the posterior, and the posterior distribution of the number of *occupied*
  components (those with at least one point assigned in a Gibbs draw of the labels) is
  the posterior of the number of clusters in the data, under that prior.

Everything here is the thin user-facing layer: arguments are checked before any work
(messages name the parameter, the expectation, what came and the fix), then the pure core
(:mod:`bayes_gmm.model_grid`, :mod:`bayes_gmm.gibbs`, :mod:`bayes_gmm.posterior`) does
the work. Every K of one covariance type is fitted by one compiled, vmapped program (the
priors are padded to common component slots: :mod:`bayes_gmm.padding`), so a grid of
K = 1..9 over four covariance types compiles a handful of programs, once per data width
and row bucket, and JAX's persistent cache keeps them for the next process.

The criteria answer different questions and need not agree. BIC approximates the log
marginal likelihood and is consistent for the number of components of a correctly
specified mixture (Keribin, 2000); ICL adds the entropy of the assignments and so prefers
well-separated clusters over a good density fit (Biernacki, Celeux and Govaert, 2000);
held-out likelihood and LOO estimate predictive accuracy and happily keep a surplus
component that improves the density a little. The number of occupied components depends
on the prior of the weights *and* of the components (see :func:`occupied_components`).

References
----------
Biernacki, C., Celeux, G. and Govaert, G. (2000). Assessing a mixture model for clustering
with the integrated completed likelihood. IEEE Transactions on Pattern Analysis and
Machine Intelligence 22, 719-725.
Keribin, C. (2000). Consistent estimation of the order of mixture models. Sankhya A 62,
49-66.
Malsiner-Walli, G., Frühwirth-Schnatter, S. and Grün, B. (2016). Model-based clustering
based on sparse finite Gaussian mixtures. Statistics and Computing 26, 303-324.
Richardson, S. and Green, P. J. (1997). On Bayesian analysis of mixtures with an unknown
number of components. Journal of the Royal Statistical Society B 59, 731-792.
Rousseau, J. and Mengersen, K. (2011). Asymptotic behaviour of the posterior distribution
in overfitted mixture models. Journal of the Royal Statistical Society B 73, 689-710.
Schwarz, G. (1978). Estimating the dimension of a model. Annals of Statistics 6, 461-464.
Vehtari, A., Gelman, A. and Gabry, J. (2017). Practical Bayesian model evaluation using
leave-one-out cross-validation and WAIC. Statistics and Computing 27, 1413-1432.
"""

from __future__ import annotations

import difflib
import numbers
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from bayes_gmm import model_grid, padding
from bayes_gmm.checks import check_data, check_float, check_int, seed_from
from bayes_gmm.em import GMMParams
from bayes_gmm.exceptions import ConvergenceWarning
from bayes_gmm.priors import (
    COVARIANCE_TYPES,
    GMMPrior,
    check_covariance_type,
    default_prior,
)
from bayes_gmm.progress import step

CRITERIA = ("bic", "icl", "aic", "heldout", "loo")
POSTERIOR_METHODS = ("gibbs", "nuts", "laplace")

# Lower is better for the information criteria, higher for the predictive ones; the
# column of the table that each criterion is read from.
CRITERION_COLUMNS = {
    "bic": ("bic", "min"),
    "icl": ("icl", "min"),
    "aic": ("aic", "min"),
    "heldout": ("heldout_log_likelihood", "max"),
    "loo": ("elpd_loo", "max"),
}

# The Dirichlet concentration of the sparse overfitted mixture. Rousseau and Mengersen
# (2011) show that surplus components empty asymptotically when it is below d / 2, d the
# number of free parameters of one component (2 for a univariate Gaussian); Malsiner-Walli
# et al. (2016) recommend a value far below that bound, of the order of 0.01, so that
# emptying also happens at realistic sample sizes.
SPARSE_CONCENTRATION = 0.01

PRIOR_OVERRIDES = (
    "weight_concentration_prior",
    "mean_prior",
    "mean_precision_prior",
    "degrees_of_freedom_prior",
    "covariance_prior",
)


# --------------------------------------------------------------------------------------
# select_k


def select_k(
    x,
    ks,
    *,
    covariance_type="full",
    criteria=CRITERIA,
    validation_fraction=0.25,
    posterior="gibbs",
    num_chains=4,
    num_warmup=500,
    num_samples=1000,
    n_init=3,
    max_iter=200,
    tol=1e-6,
    random_state=None,
    weight_concentration_prior=None,
    mean_prior=None,
    mean_precision_prior=None,
    degrees_of_freedom_prior=None,
    covariance_prior=None,
) -> pd.DataFrame:
    r"""Every standard criterion for choosing K, one row per K.

    For each K the MAP estimate is found by EM (``n_init`` k-means++ starts, the best
    kept) under :func:`bayes_gmm.default_prior` for that K (the default covariance
    prior ``cov(x) / K ** (2 / D)`` shrinks with K; pass ``covariance_prior`` to hold it
    fixed). Then, for the criteria asked for:

    - ``"bic"``: :math:`\mathrm{BIC} = -2 \log L(\hat\theta) + p \log N` (Schwarz, 1978),
    - ``"aic"``: :math:`\mathrm{AIC} = -2 \log L(\hat\theta) + 2 p`,
    - ``"icl"``: :math:`\mathrm{ICL} = \mathrm{BIC} + 2 \sum_n \sum_k -\hat r_{nk} \log
      \hat r_{nk}`, BIC plus twice the entropy of the responsibilities at the MAP: the
      BIC approximation of the *integrated completed* likelihood, i.e. BIC minus twice
      the expected complete-data term :math:`\sum_{n,k} \hat r_{nk} \log \hat r_{nk}`
      of the assignments (Biernacki, Celeux and Govaert, 2000, with the labels
      estimated by the responsibilities rather than hard MAP labels),

      all three with scikit-learn's sign convention, **lower is better** (R's mclust
      reports the negative of BIC, higher is better). :math:`\hat\theta` is the MAP
      estimate, so :math:`L(\hat\theta)` is the likelihood *at the MAP*, not the
      maximised likelihood; ``p`` counts the free parameters of the components with
      non-zero weight (``K - 1 + K D + `` the covariance parameters) and N the points;
    - ``"heldout"``: the points are split once at random; each K is fitted (same
      settings, default prior built from the training part) on the training part and
      scored by the mean log density per validation point, **higher is better**;
    - ``"loo"``: the posterior of each K is sampled from its MAP
      (:func:`bayes_gmm.posterior.sample`), and ``arviz_stats.loo`` estimates the expected
      log pointwise predictive density by Pareto-smoothed importance sampling;
      ``arviz_stats.compare`` ranks the Ks (**higher elpd is better**). This is by far the
      most expensive criterion: ``num_chains * num_samples * N`` log densities per K.

    Parameters
    ----------
    x : array-like of shape (n_samples, n_features)
    ks : int or sequence of int
        The numbers of components to compare; an int ``k`` means ``1, ..., k``. Sorted,
        duplicates dropped; each between 1 and the number of points (of the training
        part when ``"heldout"`` is asked for).
    covariance_type : str or sequence of str, default "full"
        One of "full", "tied", "diag", "spherical", or a list of them: the model search
        of mclust, every (covariance type, K) pair fitted and ranked together.
    criteria : sequence of str, default ("bic", "icl", "aic", "heldout", "loo")
        Any of those; leave ``"loo"`` out to skip all sampling.
    validation_fraction : float in (0, 1), default 0.25
        Share of the points held out for ``"heldout"`` (rounded to a whole number of
        points, at least one, leaving at least ``max(ks)`` for training).
    posterior : {"gibbs", "nuts", "laplace"}, default "gibbs"
        The sampler for ``"loo"``; see :func:`bayes_gmm.posterior.sample`.
    num_chains, num_warmup, num_samples : int, default 4, 500, 1000
        Settings of the sampler for ``"loo"``.
    n_init : int, default 3
        k-means++ restarts of EM for every K (the best log posterior wins); they run
        side by side in the same program as the Ks.
    max_iter : int, default 200
    tol : float, default 1e-6
        EM settings, as in :class:`bayes_gmm.BayesianGMM`.
    random_state : int or None, default None
        One seed for everything random (EM starts, the split, the sampler); the seed
        used is stored in ``table.attrs["random_state"]``.
    weight_concentration_prior, mean_prior, mean_precision_prior : optional
    degrees_of_freedom_prior, covariance_prior : optional
        Overrides of the default prior, the same for every K (see
        :func:`bayes_gmm.default_prior`); ``weight_concentration_prior`` must be one
        number here, since K changes.

    Returns
    -------
    pandas.DataFrame
        Index ``k`` (the Ks, ascending) for one covariance type; for a list, a
        MultiIndex ``(covariance_type, k)``, the types in the order given, one row per
        pair. Columns, those of criteria not asked for left out:

        - ``n_parameters``: p, free parameters of the live components;
        - ``live_components``: components with non-zero weight at the MAP (fewer than K
          only when ``weight_concentration_prior < 1``);
        - ``converged``: whether EM converged;
        - ``log_likelihood``, ``log_posterior``: at the MAP, summed over the points;
        - ``entropy``: :math:`-\sum_{n,k} \hat r_{nk} \log \hat r_{nk}` at the MAP (ICL);
        - ``bic``, ``icl``, ``aic``;
        - ``heldout_log_likelihood``: mean log density per validation point;
        - ``elpd_loo``, ``elpd_loo_se``, ``p_loo`` (effective number of parameters),
          ``pareto_k_max``, ``pareto_k_bad`` (share of points with Pareto k above
          ``arviz_stats``' threshold ``good_k``, whose LOO estimate is unreliable),
          ``loo_rank`` (0 is best), ``loo_elpd_diff`` and ``loo_dse`` (elpd difference
          to the best K and its standard error), ``loo_weight`` (stacking weight);
        - ``best_<criterion>``: True in the one row that criterion prefers over the whole
          table (ties: the first type given, then the smallest K).

        ``table.attrs`` holds ``best`` and ``runner_up`` (criterion -> K, or -> (type, K)
        for a list of types; runner-up None with a single row), ``criteria``,
        ``covariance_type``,
        ``n_samples``, ``n_validation``, ``posterior``, ``random_state`` and
        ``sign_convention``.

    Raises
    ------
    ValueError
        Bad ``ks``, ``criteria``, ``validation_fraction``, prior overrides or settings;
        all checked before any work.
    FloatingPointError
        A fit with a non-finite log posterior (enable float64).

    Warns
    -----
    ConvergenceWarning
        EM did not converge for some K (named).
    UserWarning
        Some K has points whose Pareto k exceeds ``good_k`` (from ``arviz_stats``; named
        once, with the Ks).

    Examples
    --------
    >>> from bayes_gmm import datasets, select_k
    >>> x, _ = datasets.two_gaussians(seed=0, n_samples=200, separation=6.0)
    >>> table = select_k(x, 3, criteria=("bic", "icl"), random_state=0)
    >>> table.attrs["best"]
    {'bic': 2, 'icl': 2}
    >>> grid = select_k(x, 4, covariance_type=["full", "diag", "spherical", "tied"],
    ...                 criteria=("bic", "icl"), random_state=0)
    >>> len(grid), grid.index.names
    (16, FrozenList(['covariance_type', 'k']))
    """
    x = check_data(x)
    several = not isinstance(covariance_type, str)
    types = _check_covariance_types(covariance_type)
    criteria = _check_criteria(criteria)
    n_samples = x.shape[0]
    ks = _check_ks(ks, n_samples, "ks", "the number of points in x")
    posterior = _check_posterior(posterior)
    settings = {
        "n_init": check_int(n_init, "n_init", 1),
        "max_iter": check_int(max_iter, "max_iter", 1),
        "tol": check_float(tol, "tol", 0.0),
    }
    sampler = {
        "num_chains": check_int(num_chains, "num_chains", 1),
        "num_warmup": check_int(num_warmup, "num_warmup", 0),
        "num_samples": check_int(num_samples, "num_samples", 1),
    }
    overrides = {
        "weight_concentration_prior": weight_concentration_prior,
        "mean_prior": mean_prior,
        "mean_precision_prior": mean_precision_prior,
        "degrees_of_freedom_prior": degrees_of_freedom_prior,
        "covariance_prior": covariance_prior,
    }
    _check_scalar_concentration(weight_concentration_prior, "select_k")
    seed = seed_from(random_state)
    validation = None
    if "heldout" in criteria:
        validation = _validation_split(validation_fraction, n_samples, ks[-1], seed)
    # Every prior is built (and its overrides checked) before any fit runs.
    priors = {(t, k): default_prior(x, k, t, **overrides) for t in types for k in ks}
    train_priors = {}
    if validation is not None:
        train_priors = {(t, k): default_prior(x[~validation], k, t, **overrides)
                        for t in types for k in ks}

    key = jax.random.key(seed)
    rows_bucket = padding.row_bucket(n_samples)

    def search(t):
        """Every K of one covariance type: the MAPs and their scores (and the held-out
        fits on the training points, padded to the same rows: the same program)."""
        keys = {k: jax.random.split(model_grid.model_key(key, t, k), 3) for k in ks}
        models = _fit_and_score(x, [keys[k][0] for k in ks], [priors[t, k] for k in ks], t,
                                settings, rows_bucket)
        heldout, train_converged = {}, {}
        if validation is not None:
            train_fits = _fit_checked(x[~validation], [keys[k][1] for k in ks],
                                      [train_priors[t, k] for k in ks], t, settings,
                                      rows_bucket)
            # Scored on all points (one compiled E-step for every fit), then only the
            # validation points are kept.
            _, density = model_grid.point_scores(x, train_fits, t)
            heldout = {k: float(np.mean(d[validation])) for k, d in zip(ks, density,
                                                                        strict=True)}
            train_converged = {k: bool(i.converged) for k, (_, i) in zip(ks, train_fits,
                                                                       strict=True)}
        return keys, models, heldout, train_converged

    # The covariance types run side by side: XLA releases the GIL while it compiles and
    # runs, so on two cores the grid takes about 0.6 of the time one after another.
    models_words = f"{len(types) * len(ks)} models x {settings['n_init']} restarts"
    if validation is not None:
        models_words += ", and again on the training points"
    with step(f"EM over the grid ({models_words})"), \
            ThreadPoolExecutor(min(len(types), os.cpu_count() or 1)) as pool:
        searched = list(pool.map(search, types))
    rows, trees, not_converged = [], {}, []
    for t, (keys, models, heldout, train_converged) in zip(types, searched, strict=True):
        for k, model in zip(ks, models, strict=True):
            if not bool(model.info.converged) or not train_converged.get(k, True):
                not_converged.append((t, k))
            rows.append(_criteria_row(t, k, model, criteria, n_samples, heldout.get(k)))
            if "loo" in criteria:
                with step(f"LOO: sampling the posterior of {t} K = {k} ({posterior})"):
                    trees[t, k] = _sample(keys[k][2], x, priors[t, k], model.params, t,
                                          posterior, sampler)

    if not_converged:
        names = sorted(set(not_converged), key=not_converged.index)
        warnings.warn(
            f"EM did not converge in max_iter={settings['max_iter']} steps for "
            f"{_model_names(names, several)}: the criteria of those rows are taken at "
            "the last EM step. Increase max_iter or loosen tol.",
            ConvergenceWarning,
            stacklevel=2,
        )
    table = pd.DataFrame(rows).set_index(["covariance_type", "k"])
    if "loo" in criteria:
        with step(f"PSIS-LOO of {len(trees)} models"):
            table = table.join(_loo_table(trees, several))
    best, runner_up = _mark_best(table, criteria)
    if not several:
        table = table.droplevel("covariance_type")
        best = {c: k for c, (_, k) in best.items()}
        runner_up = {c: None if m is None else m[1] for c, m in runner_up.items()}
    table.attrs = {
        "best": best,
        "runner_up": runner_up,
        "criteria": list(criteria),
        "covariance_type": list(types) if several else types[0],
        "n_samples": n_samples,
        "n_validation": int(validation.sum()) if validation is not None else 0,
        "posterior": posterior if "loo" in criteria else None,
        "random_state": seed,
        "sign_convention": (
            "bic, icl, aic: lower is better (scikit-learn's sign; mclust reports -BIC); "
            "heldout_log_likelihood, elpd_loo: higher is better"
        ),
    }
    return table


def _validation_split(validation_fraction, n_samples, largest_k, seed) -> np.ndarray:
    """The held-out points (a boolean mask), checked to leave room for the largest K."""
    fraction = _check_fraction(validation_fraction)
    n_validation = max(1, round(fraction * n_samples))
    n_train = n_samples - n_validation
    if n_train < largest_k:
        raise ValueError(
            f"validation_fraction={fraction:g} holds out {n_validation} of {n_samples} "
            f"points and leaves {n_train} for training, fewer than the largest K "
            f"({largest_k}): a K-component mixture needs at least K training points. "
            "Lower validation_fraction or the largest value in ks, or leave 'heldout' "
            "out of criteria."
        )
    order = np.random.default_rng(seed).permutation(n_samples)
    validation = np.zeros(n_samples, bool)
    validation[order[:n_validation]] = True
    return validation


def _fit_and_score(x, keys, priors, covariance_type, settings,
                   rows=None) -> list[model_grid.ModelFit]:
    fits = _fit_checked(x, keys, priors, covariance_type, settings, rows)
    resp, log_density = model_grid.point_scores(x, fits, covariance_type)
    return model_grid.summarise(fits, resp, log_density, covariance_type)


def _criteria_row(covariance_type, k, model, criteria, n_samples, heldout) -> dict:
    row = {
        "covariance_type": covariance_type,
        "k": k,
        "n_parameters": model.n_parameters,
        "live_components": model.live_components,
        "converged": bool(model.info.converged),
        "log_likelihood": model.log_likelihood,
        "log_posterior": float(model.info.log_posterior),
    }
    bic = -2.0 * model.log_likelihood + model.n_parameters * np.log(n_samples)
    if "icl" in criteria:
        row["entropy"] = model.entropy
    if "bic" in criteria:
        row["bic"] = bic
    if "icl" in criteria:
        row["icl"] = bic + 2.0 * model.entropy
    if "aic" in criteria:
        row["aic"] = -2.0 * model.log_likelihood + 2.0 * model.n_parameters
    if heldout is not None:
        row["heldout_log_likelihood"] = heldout
    return row


def _mark_best(table, criteria) -> tuple[dict, dict]:
    """``best_<criterion>`` columns (True in the one best row; ties: the first row, i.e.
    the first type given and the smallest K) and the best and runner-up rows."""
    best, runner_up = {}, {}
    for criterion in criteria:
        column, direction = CRITERION_COLUMNS[criterion]
        order = table[column].sort_values(ascending=direction == "min", kind="stable")
        order = order[order.notna()]
        models = [(str(t), int(k)) for t, k in order.index[:2]]
        best[criterion] = models[0]
        runner_up[criterion] = models[1] if len(models) > 1 else None
        table[f"best_{criterion}"] = table.index == order.index[0]
    return best, runner_up


def _model_names(models, several) -> str:
    if several:
        return ", ".join(f"{t} K = {k}" for t, k in models)
    return "K = " + ", ".join(str(k) for _, k in models)


def _fit_checked(x, keys, priors, covariance_type, settings, rows=None):
    fits = model_grid.fit_models(keys, x, priors, covariance_type, settings, rows)
    for prior, (params, info) in zip(priors, fits, strict=True):
        if not np.isfinite(info.log_posterior) or not all(
            np.all(np.isfinite(a)) for a in params
        ):
            k = prior.weight_concentration.shape[0]
            raise FloatingPointError(
                f"The fit with K={k} ({covariance_type}) produced a non-finite log "
                f"posterior ({float(info.log_posterior)}): a covariance became numerically "
                f"singular in {np.asarray(x).dtype}. Enable float64 (JAX_ENABLE_X64=1), or "
                "pass a larger covariance_prior or mean_precision_prior, or leave this K "
                "out of ks."
            )
    return fits


def _fit(key, x, prior, covariance_type, settings, k):
    """One checked MAP fit (the start of the sparse overfitted mixture)."""
    return _fit_checked(x, [key], [prior], covariance_type, settings)[0]


def _sample(key, x, prior, params, covariance_type, method, sampler):
    from bayes_gmm import posterior  # NumPyro is imported only when sampling

    return posterior.sample(
        key, x, prior, params, covariance_type=covariance_type, method=method,
        log_likelihood=True, **sampler,
    )


def _loo_table(trees, several=False) -> pd.DataFrame:
    """PSIS-LOO of every model and arviz_stats' comparison, one row per model; ``trees``
    is keyed by (covariance type, K)."""
    import arviz_stats

    results, high = {}, []
    for model, tree in trees.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = arviz_stats.loo(tree, pointwise=True, var_name="x")
        for caught_warning in caught:
            # Pareto-k warnings are summarised once below, for all K; others pass on.
            if "pareto" not in str(caught_warning.message).lower():
                warnings.warn_explicit(caught_warning.message, caught_warning.category,
                                       caught_warning.filename, caught_warning.lineno)
        if result.warning:
            high.append(model)
        results[model] = result
    if high:
        warnings.warn(
            f"PSIS-LOO: for {_model_names(high, several)} some points have Pareto k above "
            "arviz_stats' threshold good_k, so their LOO estimates are unreliable (see the "
            "pareto_k_max and pareto_k_bad columns). Take more draws (num_samples), or "
            "trust the other criteria for those K.",
            UserWarning,
            stacklevel=3,
        )
    rows = {}
    for model, result in results.items():
        pareto_k = np.asarray(result.pareto_k, np.float64)
        rows[model] = {
            "elpd_loo": float(result.elpd),
            "elpd_loo_se": float(result.se),
            "p_loo": float(result.p),
            "pareto_k_max": float(np.nanmax(pareto_k)),
            "pareto_k_bad": float(np.mean(pareto_k > result.good_k)),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(list(rows), names=["covariance_type", "k"])
    if len(results) > 1:
        names = {f"{t}:{k}": (t, k) for t, k in results}
        with warnings.catch_warnings():
            # compare repeats the Pareto-k warnings already summarised above.
            warnings.filterwarnings("ignore", message=".*[Pp]areto.*")
            comparison = arviz_stats.compare(
                {name: results[model] for name, model in names.items()}, round_to="none"
            )
        comparison.index = pd.MultiIndex.from_tuples([names[n] for n in comparison.index],
                                                     names=["covariance_type", "k"])
        table["loo_rank"] = comparison["rank"].astype(int)
        table["loo_elpd_diff"] = comparison["elpd_diff"].astype(float)
        table["loo_dse"] = comparison["dse"].astype(float)
        table["loo_weight"] = comparison["weight"].astype(float)
    else:
        table["loo_rank"] = 0
        table["loo_elpd_diff"] = 0.0
        table["loo_dse"] = 0.0
        table["loo_weight"] = 1.0
    return table


# --------------------------------------------------------------------------------------
# The sparse overfitted mixture


@dataclass(frozen=True)
class OccupiedComponents:
    """The posterior of the number of occupied components of a sparse overfitted mixture.

    A component is *occupied* in a draw when at least one point is assigned to it by the
    labels z of that Gibbs draw (its count n_k > 0); this is the number of clusters the
    draw puts in the data, not the number of components with a noticeable weight.

    Attributes
    ----------
    probabilities : pandas.Series
        Index ``n_occupied`` = 1, ..., k_max; the posterior probability of each number
        (the share of all draws of all chains), summing to 1.
    per_chain : pandas.DataFrame
        The same per chain (columns ``0 .. num_chains - 1``): chains that disagree have
        not mixed over the number of clusters; run them longer.
    draws : ndarray of shape (num_chains, num_samples)
        The number of occupied components of every draw.
    counts : ndarray of shape (num_chains, num_samples, k_max)
        n_k, the points assigned to each component in every draw (labels not aligned).
    k_max : int
    weight_concentration_prior : float
        e0, the Dirichlet concentration of every weight.
    prior : GMMPrior
        The whole prior used.
    start : GMMParams
        The start of every chain: the MAP with k_max components under a flat Dirichlet.
    """

    probabilities: pd.Series
    per_chain: pd.DataFrame
    draws: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)
    k_max: int
    weight_concentration_prior: float
    prior: GMMPrior = field(repr=False)
    start: GMMParams = field(repr=False)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{n}: {p:.3f}" for n, p in self.probabilities.items() if p > 0
        )
        return (
            f"OccupiedComponents(k_max={self.k_max}, weight_concentration_prior="
            f"{self.weight_concentration_prior:g}, draws={self.draws.size}, "
            f"mode={self.mode}, probabilities={{{shown}}})"
        )

    @property
    def mode(self) -> int:
        """The most probable number of occupied components (Malsiner-Walli et al.'s
        estimator of the number of clusters)."""
        return int(self.probabilities.idxmax())

    @property
    def mean(self) -> float:
        """The posterior mean of the number of occupied components."""
        return float(np.sum(self.probabilities.index * self.probabilities.to_numpy()))


def occupied_components(
    x,
    k_max,
    *,
    covariance_type="full",
    weight_concentration_prior=SPARSE_CONCENTRATION,
    mean_prior=None,
    mean_precision_prior=None,
    degrees_of_freedom_prior=None,
    covariance_prior=None,
    num_chains=4,
    num_warmup=1000,
    num_samples=2000,
    thinning=1,
    n_init=3,
    max_iter=200,
    random_state=None,
) -> OccupiedComponents:
    r"""Posterior of the number of occupied components of a sparse overfitted mixture.

    Fit one mixture with a generous ``k_max`` components and a symmetric Dirichlet prior
    :math:`\pi \sim \mathrm{Dir}(e_0, \dots, e_0)` with :math:`e_0` well below one, sample
    its posterior with the conjugate Gibbs sampler (:func:`bayes_gmm.gibbs.sample`), and
    count in every draw the components with at least one point assigned by the sampled
    labels. With :math:`e_0 < d/2`, d the number of free parameters of one component,
    the posterior empties the surplus components as N grows (Rousseau and Mengersen,
    2011); with :math:`e_0` far below that bound (the default 0.01, the order of value
    recommended by Malsiner-Walli et al., 2016) they empty at realistic N too, and the
    mode of the number of occupied components estimates the number of clusters.

    Every chain starts at the MAP with ``k_max`` components under the same prior but a
    *flat* Dirichlet (:math:`e_0 = 1`), where every component holds points: the sampler,
    not the start, decides which components empty (the MAP under :math:`e_0 < 1` would
    already have killed some, and a dead component rarely comes back).

    The answer depends on the prior, not only on :math:`e_0`: the default covariance
    prior of :func:`bayes_gmm.default_prior` is ``cov(x) / k_max ** (2 / D)``, which
    favours components narrower than the data by a factor that grows with ``k_max``, and
    so more of them. Pass ``covariance_prior`` (and compare) to see how far it moves the
    result.

    Parameters
    ----------
    x : array-like of shape (n_samples, n_features)
    k_max : int
        Components of the overfitted mixture; between 2 and the number of points. Choose
        it clearly above the number of clusters you expect.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
    weight_concentration_prior : float, default 0.01
        :math:`e_0 > 0`; below 1 for a sparse mixture (1 is flat, above 1 fills every
        component).
    mean_prior, mean_precision_prior, degrees_of_freedom_prior, covariance_prior
        Overrides of :func:`bayes_gmm.default_prior` (built for ``k_max`` components).
    num_chains, num_warmup, num_samples, thinning : int, default 4, 1000, 2000, 1
        Gibbs settings. Emptying a component from a full start takes a while: do not
        skimp on warm-up.
    n_init, max_iter : int, default 3, 200
        EM settings of the start.
    random_state : int or None, default None

    Returns
    -------
    OccupiedComponents
        ``probabilities`` (a Series over 1..k_max), ``per_chain``, the ``draws`` and the
        ``counts``; ``.mode`` and ``.mean``.

    References
    ----------
    Rousseau, J. and Mengersen, K. (2011). Asymptotic behaviour of the posterior
    distribution in overfitted mixture models. JRSS B 73, 689-710.
    Malsiner-Walli, G., Frühwirth-Schnatter, S. and Grün, B. (2016). Model-based
    clustering based on sparse finite Gaussian mixtures. Statistics and Computing 26,
    303-324.

    Examples
    --------
    >>> from bayes_gmm import datasets, occupied_components
    >>> x = datasets.galaxy_velocities(thousands=True)
    >>> result = occupied_components(x, 10, random_state=0)  # doctest: +SKIP
    >>> result.probabilities  # doctest: +SKIP
    """
    from bayes_gmm import gibbs

    x = check_data(x)
    covariance_type = check_covariance_type(covariance_type)
    n_samples = x.shape[0]
    k_max = _check_k_max(k_max, n_samples)
    if isinstance(weight_concentration_prior, bool) or not isinstance(
        weight_concentration_prior, numbers.Real
    ):
        raise TypeError(
            "weight_concentration_prior must be a number > 0 (e.g. 0.01 for a sparse "
            f"mixture); got {weight_concentration_prior!r}."
        )
    e0 = float(weight_concentration_prior)
    if not (np.isfinite(e0) and e0 > 0):
        raise ValueError(
            f"weight_concentration_prior must be > 0; got {e0:g}. Use a small value such "
            "as 0.01 for a sparse overfitted mixture."
        )
    if e0 >= 1:
        warnings.warn(
            f"weight_concentration_prior={e0:g} is not below 1: the prior does not favour "
            "empty components, so the number of occupied components will sit near k_max. "
            "Use a value well below 1 (e.g. 0.01) for a sparse overfitted mixture.",
            UserWarning,
            stacklevel=2,
        )
    sampler = {
        "num_chains": check_int(num_chains, "num_chains", 1),
        "num_warmup": check_int(num_warmup, "num_warmup", 0),
        "num_samples": check_int(num_samples, "num_samples", 1),
        "thinning": check_int(thinning, "thinning", 1),
    }
    settings = {
        "n_init": check_int(n_init, "n_init", 1),
        "max_iter": check_int(max_iter, "max_iter", 1),
        "tol": 1e-6,
    }
    seed = seed_from(random_state)
    overrides = {
        "mean_prior": mean_prior,
        "mean_precision_prior": mean_precision_prior,
        "degrees_of_freedom_prior": degrees_of_freedom_prior,
        "covariance_prior": covariance_prior,
    }
    prior = default_prior(x, k_max, covariance_type, weight_concentration_prior=e0,
                          **overrides)
    flat = prior._replace(weight_concentration=np.ones(k_max))

    start_key, sample_key = jax.random.split(jax.random.key(seed))
    x_work = jnp.asarray(x)
    start, _ = _fit(start_key, x_work, flat, covariance_type, settings, k_max)
    _, info = gibbs.sample(sample_key, x_work, prior, start, covariance_type=covariance_type,
                           **sampler)
    draws = np.asarray(info.occupied, np.int64)
    counts = np.asarray(info.counts, np.int64)
    index = pd.RangeIndex(1, k_max + 1, name="n_occupied")
    per_chain = pd.DataFrame(
        {c: np.bincount(draws[c], minlength=k_max + 1)[1:] / draws.shape[1]
         for c in range(draws.shape[0])},
        index=index,
    )
    per_chain.columns.name = "chain"
    probabilities = pd.Series(
        np.bincount(draws.ravel(), minlength=k_max + 1)[1:] / draws.size, index=index,
        name="probability",
    )
    return OccupiedComponents(
        probabilities=probabilities,
        per_chain=per_chain,
        draws=draws,
        counts=counts,
        k_max=k_max,
        weight_concentration_prior=e0,
        prior=prior,
        start=GMMParams(*(np.asarray(a) for a in start)),
    )


# --------------------------------------------------------------------------------------
# Checks at the boundary


def _check_ks(ks, n_samples, name, what) -> list[int]:
    if isinstance(ks, numbers.Integral) and not isinstance(ks, bool):
        if ks < 1:
            raise ValueError(
                f"{name} as an integer means 1..{name} and must be >= 1; got {ks}. Pass e.g. "
                f"{name}=5 or {name}=range(1, 6)."
            )
        ks = range(1, int(ks) + 1)
    if isinstance(ks, str) or not np.iterable(ks):
        raise TypeError(
            f"{name} must be an integer or a sequence of integers, e.g. range(1, 6); got "
            f"{ks!r}."
        )
    values = list(ks)
    if not values:
        raise ValueError(f"{name} is empty; pass at least one K, e.g. {name}=range(1, 6).")
    bad = [v for v in values
           if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Integral)]
    if bad:
        raise TypeError(
            f"{name} must hold integers; got {bad[0]!r} of type {type(bad[0]).__name__}. "
            f"Pass whole numbers, e.g. {name}=range(1, 6)."
        )
    values = sorted({int(v) for v in values})
    if values[0] < 1:
        raise ValueError(
            f"{name} must hold numbers of components >= 1; got {values[0]}. Drop it."
        )
    if values[-1] > n_samples:
        raise ValueError(
            f"{name} holds K={values[-1]}, more components than {what} ({n_samples}): a "
            f"K-component mixture needs at least K points. Keep every K <= {n_samples}."
        )
    return values


def _check_k_max(k_max, n_samples) -> int:
    if isinstance(k_max, bool) or not isinstance(k_max, numbers.Integral):
        raise TypeError(
            f"k_max must be an integer >= 2, the components of the overfitted mixture; got "
            f"{k_max!r}."
        )
    if k_max < 2:
        raise ValueError(
            f"k_max must be >= 2 (an overfitted mixture needs room for surplus components); "
            f"got {k_max}. Choose it clearly above the number of clusters you expect, e.g. 10."
        )
    if k_max > n_samples:
        raise ValueError(
            f"k_max={k_max} exceeds the number of points ({n_samples}): the start needs at "
            f"least one point per component. Use k_max <= {n_samples}."
        )
    return int(k_max)


def _check_covariance_types(value) -> list[str]:
    """One covariance type (a string) or a non-empty sequence of distinct ones."""
    if isinstance(value, str):
        return [check_covariance_type(value)]
    try:
        values = list(value)
    except TypeError:
        raise TypeError(
            f"covariance_type must be one of {', '.join(map(repr, COVARIANCE_TYPES))} or a "
            f"list of them; got {value!r}."
        ) from None
    if not values:
        raise ValueError(
            "covariance_type is an empty list; pass at least one of "
            f"{', '.join(map(repr, COVARIANCE_TYPES))}."
        )
    values = [check_covariance_type(v) for v in values]
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(
            f"covariance_type lists {', '.join(map(repr, repeated))} more than once; name "
            "each covariance type once."
        )
    return values


def _check_criteria(criteria) -> tuple[str, ...]:
    if isinstance(criteria, str):
        criteria = (criteria,)
    try:
        values = list(criteria)
    except TypeError:
        raise TypeError(
            f"criteria must be a sequence of names from {CRITERIA}; got {criteria!r}."
        ) from None
    if not values:
        raise ValueError(
            f"criteria is empty; pass at least one of {', '.join(map(repr, CRITERIA))}."
        )
    for value in values:
        if value not in CRITERIA:
            close = difflib.get_close_matches(str(value), CRITERIA, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"criteria: unknown criterion {value!r}; choose from "
                f"{', '.join(map(repr, CRITERIA))}.{hint}"
            )
    return tuple(c for c in CRITERIA if c in values)


def _check_fraction(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"validation_fraction must be a number in (0, 1), e.g. 0.25; got {value!r}."
        )
    if not 0 < value < 1:
        raise ValueError(
            f"validation_fraction must be in the open interval (0, 1), the share of points "
            f"held out; got {value}. Use e.g. 0.25, or leave 'heldout' out of criteria."
        )
    return float(value)


def _check_posterior(value) -> str:
    if value not in POSTERIOR_METHODS:
        raise ValueError(
            f"posterior must be one of {', '.join(map(repr, POSTERIOR_METHODS))}; got "
            f"{value!r}."
        )
    return value


def _check_scalar_concentration(value, where) -> None:
    if value is not None and np.ndim(value) != 0:
        raise ValueError(
            f"weight_concentration_prior must be one number in {where} (K changes, so "
            f"one value per component cannot be given); got an array of shape "
            f"{np.shape(value)}."
        )


