"""Tables of the shape bayes_gmm.selection.select_k returns, built by hand, for tests of
what reads them (figures, the results folder, the CLI summary) without fitting anything.

One covariance type: index ``k``; several: a MultiIndex ``(covariance_type, k)``, types
in the order given. ``attrs`` as select_k sets them: ``best`` (criterion -> K, or ->
(covariance_type, K)), with several types also ``runner_up``.
"""

import pandas as pd

TYPES = ["full", "diag", "spherical", "tied"]
# criterion -> (column, lower is better), as bayes_gmm.selection.CRITERION_COLUMNS.
COLUMNS = {"bic": ("bic", True), "icl": ("icl", True), "aic": ("aic", True),
           "heldout": ("heldout_log_likelihood", False), "loo": ("elpd_loo", False)}


def selection_table(types=TYPES, ks=(1, 2, 3, 4), best_at=("tied", 3), criteria=tuple(COLUMNS),
                    n_samples=82):
    """BIC, ICL and AIC lowest, held-out and LOO highest at ``best_at`` (BIC 2300 there,
    10 more per step in K or to another type, plus the type's position); only the
    columns of ``criteria`` (and the fit's columns) are kept."""
    rows = []
    for t, covariance_type in enumerate(types):
        for k in ks:
            distance = abs(k - best_at[1]) + (covariance_type != best_at[0])
            bic = 2300.0 + 10.0 * distance + t
            rows.append({"covariance_type": covariance_type, "k": k, "n_parameters": 3 * k,
                         "live_components": k, "converged": True,
                         "log_likelihood": -bic / 2, "log_posterior": -bic / 2 - 1.0,
                         "entropy": 2.5 * k, "bic": bic, "icl": bic + 5.0 * k,
                         "aic": bic - 20.0,
                         "heldout_log_likelihood": -2.0 - 0.1 * distance - 0.001 * t,
                         "elpd_loo": -1150.0 - 3.0 * distance - 0.1 * t, "elpd_loo_se": 2.0})
    table = pd.DataFrame(rows)
    dropped = [column for c, (column, _) in COLUMNS.items() if c not in criteria]
    table = table.drop(columns=dropped + (["elpd_loo_se"] if "loo" not in criteria else []))
    best, runner_up = {}, {}
    for criterion in criteria:
        column, lower = COLUMNS[criterion]
        order = table[column].sort_values(ascending=lower, kind="stable").index
        table[f"best_{criterion}"] = table.index == order[0]
        best[criterion] = tuple(table.loc[order[0], ["covariance_type", "k"]])
        if len(order) > 1:
            runner_up[criterion] = tuple(table.loc[order[1], ["covariance_type", "k"]])
    attrs = {"criteria": list(criteria), "n_samples": n_samples, "n_validation": 21,
             "posterior": "gibbs", "random_state": 0,
             "sign_convention": "bic, icl, aic: lower is better"}
    if len(types) == 1:
        table = table.drop(columns="covariance_type").set_index("k")
        table.attrs = {**attrs, "covariance_type": types[0],
                       "best": {c: int(k) for c, (_, k) in best.items()}}
    else:
        table = table.set_index(["covariance_type", "k"])
        table.attrs = {**attrs, "covariance_type": list(types),
                       "best": {c: (t, int(k)) for c, (t, k) in best.items()},
                       "runner_up": {c: (t, int(k)) for c, (t, k) in runner_up.items()}}
    return table
