"""Run by tests/test_sharding.py in a subprocess with 4 simulated CPU devices: fits with
and without sharding, printed as JSON (XLA_FLAGS must be set before JAX starts)."""

import json
import time

import jax
import numpy as np

from bayes_gmm import default_prior, fit_map, gibbs, nuts
from bayes_gmm.covariance import KINDS
from bayes_gmm.em import GMMParams

start = time.perf_counter()
rng = np.random.default_rng(0)
# 273 rows: not a multiple of the 4 devices, so the last device holds padding.
x = np.concatenate([rng.normal(size=(150, 2)) + 4, rng.normal(size=(123, 2)) * 0.5 + 10])
START_COVARIANCES = {"full": np.tile(np.eye(2), (3, 1, 1)), "tied": np.eye(2),
                     "diag": np.ones((3, 2)), "spherical": np.ones(3)}


def gap(a, b):
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in pairs)


results = {"devices": jax.device_count(), "em": {}}
for covariance_type in KINDS:
    prior = default_prior(x, 3, covariance_type)
    init = GMMParams(np.full(3, 1 / 3), x[[0, 200, 100]], START_COVARIANCES[covariance_type])
    options = dict(covariance_type=covariance_type, max_iter=15, tol=0.0, chunk_size=16)
    one, one_info = fit_map(jax.random.key(0), x, prior, init, mesh=None, **options)
    many, many_info = fit_map(jax.random.key(0), x, prior, init, mesh="auto", **options)
    results["em"][covariance_type] = {
        "gap": gap(one, many),
        "lp": [float(one_info.log_posterior), float(many_info.log_posterior)],
        "iter": [int(one_info.n_iter), int(many_info.n_iter)],
    }
    if covariance_type == "diag":
        chunks = [x[:7], x[7:7], x[7:90], x[90:]]
        streamed, _ = fit_map(jax.random.key(0), chunks, prior, init,
                              **{**options, "chunk_size": 40})
        results["stream_gap"] = gap(one, streamed)
        # The whole Gibbs sampler, labels drawn on the devices that hold the points.
        draws = {}
        for mesh in (None, "auto"):
            draws[mesh], info = gibbs.sample(
                jax.random.key(1), x, prior, one, covariance_type=covariance_type,
                num_samples=5, num_warmup=3, num_chains=2, mesh=mesh)
        results["gibbs_gap"] = gap(draws[None], draws["auto"])
        results["gibbs_moved"] = gap(draws[None].means[:, :1], draws[None].means[:, -1:])

# NUTS with as many devices as chains: one chain per device (bayes_gmm.nuts._parallel),
# against the same chains vectorised on one device.
nuts_x = x[::5]
nuts_prior = default_prior(nuts_x, 2, "full")
nuts_start = GMMParams(np.array([0.55, 0.45]), nuts_x[[0, -1]], np.stack([np.eye(2)] * 2))
settings = dict(num_warmup=10, num_samples=5, thinning=1, init="map")
key_data = jax.random.key_data(jax.random.key(2))
impl = str(jax.random.key_impl(jax.random.key(2)))
one_device = jax.jit(lambda key, *args: nuts.run_chains(
    key, *args, "full", num_chains=4, init_jitter=0.1, **settings))(
    jax.random.key(2), nuts_x, nuts_prior, nuts_start)
per_device = nuts._parallel(key_data, impl, nuts_x, nuts_prior, nuts_start, np.asarray(0.1),
                            "full", 4, settings)
results["nuts_gap"] = gap(one_device[0], per_device[0]) / float(np.max(np.abs(nuts_x)))
results["nuts_steps_equal"] = bool(np.array_equal(one_device[1]["num_steps"],
                                                  per_device[1]["num_steps"]))
results["nuts_devices"] = len(per_device[0].means.sharding.device_set)
results["seconds"] = time.perf_counter() - start
print(json.dumps(results))
