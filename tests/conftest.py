"""Shared test settings: the suite runs once in float32 (JAX's default) and once with
JAX_ENABLE_X64=1, so tolerances are derived from the precision in use."""

import jax
import numpy as np
import pytest

X64 = bool(jax.config.jax_enable_x64)
DTYPE = np.float64 if X64 else np.float32
EPS = float(np.finfo(DTYPE).eps)
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(params=COVARIANCE_TYPES)
def covariance_type(request):
    return request.param


def two_clusters(seed=0, n=(300, 200), d=2, separation=5.0, dtype=DTYPE):
    """Two Gaussian clusters with different shapes, well separated along every axis."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n[0], d))
    b = rng.normal(size=(n[1], d)) @ np.diag(np.linspace(0.4, 0.8, d)) + separation
    return np.concatenate([a, b]).astype(dtype)


def blobs(seed, n, d, k, separation=4.0, dtype=DTYPE):
    """k clusters with random centres and random full covariances."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=separation, size=(k, d))
    labels = rng.integers(k, size=n)
    mixing = rng.normal(size=(k, d, d)) * 0.4 + np.eye(d)
    z = rng.normal(size=(n, d))
    x = centres[labels] + np.einsum("nd,nde->ne", z, mixing[labels])
    return x.astype(dtype)
