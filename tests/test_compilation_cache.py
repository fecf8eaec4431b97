"""JAX's persistent compilation cache (bayes_gmm.compilation_cache): where it goes, that a
user's own JAX setting wins, that it can be moved or turned off while a program runs, and
the point of it all: a second process compiles nothing for a fit the first one did."""

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import bayes_gmm
from bayes_gmm import cli, compilation_cache, experiment
from bayes_gmm.config import ConfigError, parse_config

pytestmark = pytest.mark.float32_pass


@pytest.fixture
def restore_jax_cache():
    """This test process's cache settings, put back after a test that changes them."""
    folder = jax.config.jax_compilation_cache_dir
    min_time = jax.config.jax_persistent_cache_min_compile_time_secs
    ours = compilation_cache._set_by_us
    yield
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)
    compilation_cache._set_jax_folder(folder)
    compilation_cache._set_by_us = ours


def compile_something(n):
    """Compile a program of its own (a new function and shape: no in-memory hit)."""
    jax.jit(lambda x: jnp.sin(x) * 2.0 + 1.0)(jnp.ones(n)).block_until_ready()


def entries(folder):
    return sorted(p.name for p in Path(folder).glob("*-cache")) if Path(folder).exists() else []


# --------------------------------------------------------------------------------------
# Where the cache goes


@pytest.mark.parametrize("value", ["0", "off", "OFF", "False", "none", "", "  "])
def test_environment_variable_turns_it_off(value):
    assert compilation_cache.default_directory({"BAYES_GMM_CACHE_DIR": value}) is None


def test_environment_variable_moves_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    default = compilation_cache.default_directory
    assert default({"BAYES_GMM_CACHE_DIR": str(tmp_path / "c")}) == tmp_path / "c"
    assert default({"BAYES_GMM_CACHE_DIR": "~/c"}) == tmp_path / "home" / "c"
    assert default({"BAYES_GMM_CACHE_DIR": "rel"}) == tmp_path / "rel"  # made absolute
    # it wins over XDG_CACHE_HOME
    assert default({"BAYES_GMM_CACHE_DIR": "/x", "XDG_CACHE_HOME": "/y"}) == Path("/x")


def test_default_is_the_user_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    default = compilation_cache.default_directory
    assert default({}) == tmp_path / ".cache" / "bayes_gmm" / "jax"
    assert default({"XDG_CACHE_HOME": "/xdg"}) == Path("/xdg/bayes_gmm/jax")
    # the XDG specification: a relative path there is to be ignored
    assert default({"XDG_CACHE_HOME": "relative"}) == tmp_path / ".cache" / "bayes_gmm" / "jax"


def test_enable_default_turns_it_on_and_caches_fast_programs(tmp_path, restore_jax_cache):
    compilation_cache.configure(None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)  # JAX's default
    folder = compilation_cache.enable_default({"BAYES_GMM_CACHE_DIR": str(tmp_path / "c")})
    assert folder == tmp_path / "c" and folder.is_dir()
    assert compilation_cache.directory() == folder
    # JAX would only keep programs that took a second to compile: most of ours do not
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    assert compilation_cache.enable_default({"BAYES_GMM_CACHE_DIR": "off"}) is None
    assert compilation_cache.directory() is None


def test_the_users_own_jax_setting_is_never_overridden(tmp_path, restore_jax_cache):
    compilation_cache.configure(None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    users = str(tmp_path / "users")
    jax.config.update("jax_compilation_cache_dir", users)
    ours = {"BAYES_GMM_CACHE_DIR": str(tmp_path / "ours")}
    assert compilation_cache.enable_default(ours) == Path(users)
    assert jax.config.jax_compilation_cache_dir == users
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0
    assert not (tmp_path / "ours").exists()
    # nor the one in JAX's environment variable
    jax.config.update("jax_compilation_cache_dir", None)
    env = {**ours, "JAX_COMPILATION_CACHE_DIR": users}
    assert compilation_cache.enable_default(env) == Path(users)
    assert not (tmp_path / "ours").exists()


def test_a_folder_that_cannot_be_created_means_no_cache(tmp_path, restore_jax_cache):
    (tmp_path / "file").write_text("not a folder")
    blocked = tmp_path / "file" / "cache"  # fails for root too, unlike a read-only folder
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default: silently
        assert compilation_cache.enable_default({"BAYES_GMM_CACHE_DIR": str(blocked)}) is None
    assert compilation_cache.directory() is None
    compile_something(5)  # and compiling still works
    with pytest.warns(RuntimeWarning, match="cannot be created or written.*Pass a writable"):
        assert compilation_cache.configure(blocked) is None  # asked for: said


# --------------------------------------------------------------------------------------
# Moved and turned off while a program runs (after JAX has opened the cache)


def test_configure_moves_and_turns_off_the_cache(tmp_path, restore_jax_cache):
    first, second = tmp_path / "first", tmp_path / "second"
    assert compilation_cache.configure(first) == first
    compile_something(7)
    assert entries(first)
    before = entries(first)
    assert compilation_cache.configure(str(second)) == second
    compile_something(8)
    assert entries(second) and entries(first) == before
    moved = entries(second)
    assert compilation_cache.configure(False) is None
    compile_something(9)
    assert entries(first) == before and entries(second) == moved
    assert compilation_cache.configure(True) == compilation_cache.default_directory()


# --------------------------------------------------------------------------------------
# The config key and the CLI

BASE = {"name": "t", "data": {"source": "synthetic", "n_samples": 40},
        "model": {"n_components": 2}}


def test_config_key(tmp_path):
    assert parse_config(BASE).compilation_cache is True
    assert parse_config({**BASE, "compilation_cache": False}).compilation_cache is False
    key = parse_config({**BASE, "compilation_cache": "cache"}, base_dir=tmp_path)
    assert key.compilation_cache == tmp_path / "cache"  # relative to the config file
    with pytest.raises(ConfigError, match=r"compilation_cache: expected a file path .* or "
                       r"true or false; got 3 \(an integer\).*or false"):
        parse_config({**BASE, "compilation_cache": 3})
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="compilation_cache: expected a folder, true or "
                       "false; got .*which is a file.*write false to turn the cache off"):
        parse_config({**BASE, "compilation_cache": str(tmp_path / "file")})


def test_cli_applies_the_key_before_running(tmp_path, monkeypatch, restore_jax_cache):
    seen = []

    def run_experiment(config, **kwargs):
        seen.append(compilation_cache.directory())
        raise ValueError("stopped by the test")

    monkeypatch.setattr(experiment, "run_experiment", run_experiment)
    config = tmp_path / "c.toml"
    config.write_text(textwrap.dedent("""
        name = "t"
        compilation_cache = "cli_cache"
        [data]
        source = "synthetic"
        n_samples = 40
        [model]
        n_components = 2
    """))
    assert cli.main(["run", str(config), "--quiet"]) == cli.EXIT_FAILED
    assert seen == [tmp_path / "cli_cache"]
    config.write_text(config.read_text().replace('"cli_cache"', "false"))
    assert cli.main(["run", str(config), "--quiet"]) == cli.EXIT_FAILED
    assert seen[1] is None


# --------------------------------------------------------------------------------------
# A second process starts warm

# Every program JAX builds passes through one call that records
# '/jax/core/compile/backend_compile_duration', whether XLA compiles it or it is loaded
# from the persistent cache; a load also records '/jax/compilation_cache/cache_hits'
# (jax/_src/interpreters/pxla.py, _cached_compilation; jax/_src/compiler.py,
# compile_or_get_cached). So XLA's real compilations are the first count minus the second.
# ('cache_misses' is no count of compilations: JAX records it only when it writes an entry.)
FIT_AND_COUNT = """
import json
import numpy as np
from jax import monitoring

counts = {"programs": 0, "cache_hits": 0}

def on_duration(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        counts["programs"] += 1

def on_event(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
        counts["cache_hits"] += 1

monitoring.register_event_duration_secs_listener(on_duration)
monitoring.register_event_listener(on_event)

import bayes_gmm

x = np.random.default_rng(0).normal(size=(100, 2))
bayes_gmm.BayesianGMM(n_components=2, random_state=0).fit(x)
print(json.dumps(counts))
"""


def test_a_second_process_compiles_nothing_the_first_did(tmp_path):
    env = {**os.environ, "BAYES_GMM_CACHE_DIR": str(tmp_path / "cache")}
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        env.pop(name, None)

    def run():
        done = subprocess.run([sys.executable, "-c", FIT_AND_COUNT], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        counts = json.loads(done.stdout.strip().splitlines()[-1])
        return counts["programs"] - counts["cache_hits"], counts["cache_hits"]

    compiled, hits = run()
    assert compiled > 0 and hits == 0  # a cold cache
    assert len(entries(tmp_path / "cache")) == compiled  # every program kept, fast ones too
    compiled_again, hits_again = run()
    assert compiled_again == 0
    assert hits_again == compiled


def test_the_suite_uses_its_own_cache():
    """tests/conftest.py: a fresh folder per run of the suite, never the user's."""
    folder = compilation_cache.directory()
    assert folder is not None and "bayes_gmm_test_cache_" in str(folder)
    assert bayes_gmm.compilation_cache is compilation_cache
