"""Run by tests/test_sharding.py in a subprocess with 4 simulated CPU devices: fits with
and without sharding, printed as JSON (XLA_FLAGS must be set before JAX starts)."""

import json
import time

import jax
import numpy as np

from bayes_gmm import default_prior, fit_map, gibbs, sharding
from bayes_gmm.em import GMMParams

start = time.perf_counter()
rng = np.random.default_rng(0)
# 273 rows: not a multiple of the 4 devices, so the last device holds padding.
x = np.concatenate([rng.normal(size=(150, 2)) + 4, rng.normal(size=(123, 2)) * 0.5 + 10])
prior = default_prior(x, 3, "diag")
init = GMMParams(np.full(3, 1 / 3), x[[0, 200, 100]], np.ones((3, 2)))
options = dict(covariance_type="diag", max_iter=15, tol=0.0)


def gap(a, b):
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in pairs)


one, one_info = fit_map(jax.random.key(0), x, prior, init, mesh=None, chunk_size=16, **options)
many, many_info = fit_map(jax.random.key(0), x, prior, init, chunk_size=16, **options)
chunks = [x[:7], x[7:7], x[7:90], x[90:]]
streamed, streamed_info = fit_map(jax.random.key(0), chunks, prior, init, chunk_size=40, **options)
# The Gibbs sampler differs under a mesh only in its passes over the points (the E-step,
# the label draws and their statistics); the full sampler compiles for too long for a test.
gibbs_data = {}
for mesh in (None, sharding.row_mesh()):
    data, _, params, _ = gibbs._centre(x, prior, one)
    if mesh is not None:
        data = sharding.device_chunks(np.c_[data, np.ones(len(x))], mesh, 16)
    log_resp, loglik = jax.jit(gibbs._e_step, static_argnums=(2, 3))(data, params, "diag", mesh)
    stats = jax.jit(gibbs._label_statistics, static_argnums=(3, 4))(
        jax.random.key(1), log_resp, data, "diag", mesh
    )
    gibbs_data[mesh is None] = loglik, stats
print(json.dumps({
    "devices": jax.device_count(),
    "em_gap": gap(one, many),
    "em_lp": [float(one_info.log_posterior), float(many_info.log_posterior)],
    "em_iter": [int(one_info.n_iter), int(many_info.n_iter)],
    "stream_gap": gap(one, streamed),
    "gibbs_loglik_gap": abs(float(gibbs_data[True][0] - gibbs_data[False][0])),
    "gibbs_stats_gap": gap(gibbs_data[True][1], gibbs_data[False][1]),
    "gibbs_counts": [np.asarray(gibbs_data[k][1].counts).tolist() for k in (True, False)],
    "seconds": time.perf_counter() - start,
}))
