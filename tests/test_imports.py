"""``import bayes_gmm`` stays light: NumPyro, ArviZ, matplotlib and xarray (a second of the
import) load only when a function needs them, and a MAP fit needs none of them. Checked in
fresh interpreters, since this test process has imported them all already."""

import json
import os
import subprocess
import sys

import pytest

import bayes_gmm

pytestmark = pytest.mark.float32_pass

HEAVY = ("numpyro", "arviz", "arviz_base", "arviz_stats", "arviz_plots", "matplotlib", "xarray")

REPORT_HEAVY = f"""
import json, sys
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))))
"""


def heavy_modules_after(code, tmp_path):
    """The heavy packages loaded once ``code`` has run in a fresh interpreter."""
    env = {**os.environ, "BAYES_GMM_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code + REPORT_HEAVY], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_loads_no_heavy_package(tmp_path):
    assert heavy_modules_after("import bayes_gmm", tmp_path) == []


def test_map_fit_loads_no_heavy_package(tmp_path):
    code = (
        "import numpy as np, bayes_gmm\n"
        "x = np.random.default_rng(0).normal(size=(100, 2))\n"
        "gmm = bayes_gmm.BayesianGMM(n_components=2, random_state=0).fit(x)\n"
        "gmm.predict(x); gmm.score(x)\n"
    )
    assert heavy_modules_after(code, tmp_path) == []


def test_every_public_name_resolves():
    """The lazy names are the real objects, by attribute, by ``from`` and in ``dir``."""
    from bayes_gmm import compare_map_posterior, prior_sweep, select_k
    from bayes_gmm.diagnostics import compare_map_posterior as direct

    assert compare_map_posterior is direct
    assert prior_sweep is bayes_gmm.sensitivity.prior_sweep
    assert select_k is bayes_gmm.selection.select_k
    for name in bayes_gmm.__all__:
        assert getattr(bayes_gmm, name) is not None, name
        assert name in dir(bayes_gmm), name
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        bayes_gmm.no_such_name  # noqa: B018
