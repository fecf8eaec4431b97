"""Shared test settings: the suite runs once in float32 (JAX's default) and once with
JAX_ENABLE_X64=1, so tolerances are derived from the precision in use."""

import atexit
import contextlib
import gc
import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

X64 = bool(jax.config.jax_enable_x64)
DTYPE = np.float64 if X64 else np.float32
EPS = float(np.finfo(DTYPE).eps)
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

# JAX's persistent compilation cache (bayes_gmm.compilation_cache) goes to a fresh folder
# per run of the suite, never the user's ~/.cache: the tests write nothing there, and a
# run's time is that of a machine with a cold cache, whatever ran before. Set here rather
# than in the Makefile so that a bare `pytest` does the same. This file is imported before
# xdist starts its workers, which inherit the variable: one folder per run, so a program
# one worker compiled serves the other, as it would a user's next process. Subprocesses
# (the CLI, notebooks) inherit it too.
if "PYTEST_XDIST_WORKER" not in os.environ:
    _CACHE_DIR = tempfile.mkdtemp(prefix="bayes_gmm_test_cache_")
    os.environ["BAYES_GMM_CACHE_DIR"] = _CACHE_DIR
    atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)


# XLA's CPU compiler maps about 500 memory regions per compiled program of the EM core's
# size, and keeps them while JAX caches the program. A test worker compiles a few hundred
# programs, which would exhaust the kernel's vm.max_map_count (65530 by default) and crash
# the compiler with a segmentation fault. So the caches are dropped when the count grows:
# between modules (a fixture's programs are not needed by the next module), and within a
# module only as a last resort (a test that counts re-tracing could then see one).
_MAPS = Path("/proc/self/maps")
MAPS_BETWEEN_MODULES = 20_000
MAPS_WITHIN_MODULE = 45_000


def _map_count() -> int:
    if not _MAPS.exists():  # not Linux: no such limit to watch
        return 0
    with _MAPS.open("rb") as maps:
        return sum(1 for _ in maps)


def _release_compiled_programs(limit):
    if _map_count() > limit:
        jax.clear_caches()
        gc.collect()


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs_between_modules():
    yield
    _release_compiled_programs(MAPS_BETWEEN_MODULES)


@pytest.fixture(autouse=True)
def release_compiled_programs_if_near_the_limit():
    yield
    _release_compiled_programs(MAPS_WITHIN_MODULE)


# Some tests do not depend on the precision and are costly, so they run once, in the
# float32 pass (JAX's default, what most users run): end-to-end plumbing (the CLI,
# figures, configs, the README, notebooks, reproducibility, scikit-learn's estimator
# checks) and Monte Carlo comparisons whose tolerance is set by the sampling error (SBC,
# NUTS against closed forms and against Gibbs). The numerics they rest on are tested in
# both passes. Such a test or module carries ``pytest.mark.float32_pass``.
def pytest_collection_modifyitems(config, items):
    if not X64:
        return
    skip = pytest.mark.skip(reason="does not depend on the precision: runs once, in the "
                                   "float32 pass (tests/conftest.py)")
    for item in items:
        if item.get_closest_marker("float32_pass"):
            item.add_marker(skip)


# The Makefile runs the suite on two workers with --dist loadscope, scheduled here: a
# module with module-scoped fixtures (a CLI run, a model search, a subprocess with
# several devices) goes to one worker as a whole, so that each fixture is computed once,
# not once per worker that runs one of its tests; every other test goes on its own to
# whichever worker is free. xdist then starts with the largest groups. (xdist's own
# "loadgroup" marks do not work with pytest 9.2, which no longer reads item._nodeid.)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    shared = _modules_with_module_fixtures()

    class ModuleFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = nodeid.split("::", 1)[0]
            return module if Path(module).name in shared else nodeid

    return ModuleFixtureScheduling(config, log)


def _modules_with_module_fixtures() -> set[str]:
    here = Path(__file__).parent
    return {path.name for path in here.glob("test_*.py")
            if 'scope="module"' in path.read_text()}


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


@contextlib.contextmanager
def count_compilations():
    """Programs that XLA compiled (or loaded from the persistent cache) inside the block,
    as the list of JAX's compile events."""
    events = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
