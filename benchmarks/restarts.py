"""Restarts for free: select_k's best log posterior per K against mclust's MAP, and the
time of the grid, for several numbers of k-means++ restarts (issue 10).

On the galaxy velocities (82 points, in 1000 km/s) R's mclust fits the univariate
variable-variance model ("V") under ``priorControl()``: the prior of Fraley and Raftery
(2007) that :func:`bayes_gmm.default_prior` also builds, with flat Dirichlet weights. For
K = 1..6 mclust's MAP is evaluated under *our* log posterior (it is a point of the same
density), and select_k's best log posterior for that K, at each ``n_init``, must be at
least as high: EM may find a better mode than mclust's hierarchical start, never a worse
one at the best of its restarts. The grid's warm time (same process, second call) shows
what the restarts cost. Reported, not asserted; float64 (``JAX_ENABLE_X64=1`` is set
here), since the comparison is to 1e-9.

Run: ``python benchmarks/restarts.py`` (needs ``Rscript`` with mclust: Debian packages
``r-base-core r-cran-mclust``; without it only the times are reported).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("JAX_ENABLE_X64", "1")

import _common  # noqa: E402
import numpy as np  # noqa: E402

from bayes_gmm import datasets, default_prior, log_posterior, select_k  # noqa: E402
from bayes_gmm.em import GMMParams  # noqa: E402

KS = range(1, 7)
N_INITS = (1, 3, 5, 10, 20)

R_SCRIPT = """
suppressMessages(library(mclust))
x <- scan("{path}", quiet = TRUE)
out <- list()
for (k in 1:6) {{
  fit <- Mclust(x, G = k, modelNames = "V", prior = priorControl(), verbose = FALSE)
  out[[k]] <- list(k = k, pro = as.numeric(fit$parameters$pro),
                   mean = as.numeric(fit$parameters$mean),
                   var = as.numeric(fit$parameters$variance$sigmasq))
}}
cat(jsonlite::toJSON(out, digits = NA, auto_unbox = FALSE))
"""


def mclust_maps(x):
    """mclust's MAP for K = 1..6 (weights, means, variances), or None without R."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "x.txt")
        np.savetxt(path, x[:, 0], fmt="%.17g")
        script = R_SCRIPT.format(path=path)
        done = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True)
    if done.returncode != 0:
        print("mclust failed:", done.stderr.strip()[-500:], file=sys.stderr)
        return None
    return {int(f["k"][0]): f for f in json.loads(done.stdout)}


def main():
    x = datasets.galaxy_velocities(thousands=True).to_numpy(np.float64)
    maps = mclust_maps(x)
    rows = []
    for n_init in N_INITS:
        run = lambda n=n_init: select_k(x, KS, criteria=("bic",), n_init=n,  # noqa: E731
                                        max_iter=500, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run()  # compiles (or loads) the program
            start = time.perf_counter()
            table = run()
            seconds = time.perf_counter() - start
        for k in KS:
            ours = float(table.loc[k, "log_posterior"])
            theirs = None
            if maps is not None:
                fit = maps[k]
                params = GMMParams(np.asarray(fit["pro"]), np.asarray(fit["mean"])[:, None],
                                   np.asarray(fit["var"])[:, None, None])
                theirs = float(log_posterior(x, params, default_prior(x, k)))
            rows.append({"n_init": n_init, "k": k, "grid_warm_s": round(seconds, 4),
                         "log_posterior": ours, "mclust_log_posterior": theirs,
                         "difference": None if theirs is None else ours - theirs,
                         "at_least_mclust": None if theirs is None
                         else ours >= theirs - 1e-9 * abs(theirs)})
    path = _common.append_csv(rows, _common.RESULTS_DIR / "restarts.csv",
                              load=round(_common.load(), 2),
                              **_common.versions("jax", "bayes_gmm"))
    for row in rows:
        print(row)
    print("written to", path)


if __name__ == "__main__":
    main()
