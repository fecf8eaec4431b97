"""Lowered programs kept on disk (bayes_gmm.program_store): a stored program gives the
plain jit's answer, one file per distinct program, and a bad file only costs time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_gmm import compilation_cache, program_store


@pytest.fixture
def store(tmp_path):
    previous = compilation_cache.directory()
    compilation_cache.configure(tmp_path)
    yield tmp_path / program_store.SUBFOLDER
    compilation_cache.configure(previous)


def _scaled_sum(x, scale, how):
    return jnp.sum(x * scale) if how == "sum" else jnp.max(x * scale)


def test_stored_program_equals_plain_jit_and_is_written_once(store):
    fn = program_store.stored_jit(_scaled_sum, static_argnums=(2,))
    x = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    assert float(fn(x, 2.0, "sum")) == float(jax.jit(_scaled_sum, static_argnums=2)(x, 2.0,
                                                                                     "sum"))
    assert len(list(store.glob("*.bin"))) == 1
    fn(x + 1, 3.0, "sum")  # same shapes and static arguments: the same program
    assert len(list(store.glob("*.bin"))) == 1
    assert float(fn(x, 2.0, "max")) == 10.0  # another static argument: another program
    assert float(fn(np.ones((4, 3), np.float32), 1.0, "sum")) == 12.0  # another shape
    assert len(list(store.glob("*.bin"))) == 3


def test_small_programs_compile_at_llvm_o1_and_both_kinds_are_stored(store):
    small = (np.zeros((512, 2), np.float32), np.zeros(512, np.float32))
    large = np.ones(program_store.SMALL_ELEMENTS + 1, np.float32)
    on_cpu = jax.default_backend() == "cpu"
    assert program_store.compiler_options(small) == (
        program_store.SMALL_PROGRAM_OPTIONS if on_cpu else None)
    assert program_store.compiler_options((large,)) is None
    fn = program_store.stored_jit(_scaled_sum, static_argnums=(2,))
    assert float(fn(small[0] + 1, 2.0, "sum")) == 2048.0
    assert float(fn(large, 1.0, "sum")) == float(large.size)
    assert len(list(store.glob("*.bin"))) == 2  # the options do not stop the export


def test_a_new_process_reads_the_stored_program(store):
    x = np.arange(6.0, dtype=np.float32)
    program_store.stored_jit(_scaled_sum, static_argnums=(2,))(x, 2.0, "sum")
    (path,) = store.glob("*.bin")
    written = path.stat().st_mtime_ns
    fresh = program_store.stored_jit(_scaled_sum, static_argnums=(2,))  # nothing in memory
    assert float(fresh(x, 2.0, "sum")) == 30.0
    assert path.stat().st_mtime_ns == written  # read, not exported again


def test_a_corrupt_file_is_replaced(store):
    x = np.arange(6.0, dtype=np.float32)
    program_store.stored_jit(_scaled_sum, static_argnums=(2,))(x, 2.0, "sum")
    (path,) = store.glob("*.bin")
    path.write_bytes(b"not a program")
    fresh = program_store.stored_jit(_scaled_sum, static_argnums=(2,))
    assert float(fresh(x, 2.0, "sum")) == 30.0
    assert path.read_bytes() != b"not a program"


def test_traced_calls_and_no_cache_use_the_plain_jit(store, tmp_path):
    fn = program_store.stored_jit(_scaled_sum, static_argnums=(2,))
    x = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(jax.vmap(lambda row: fn(row, 2.0, "sum"))(x), [6.0, 24.0])
    assert not store.exists() or not list(store.glob("*.bin"))
    compilation_cache.configure(None)
    assert float(fn(x, 1.0, "sum")) == 15.0
    assert not store.exists() or not list(store.glob("*.bin"))


def _with_a_host_callback(x):
    # jax.export does not serialise host callbacks: such a program cannot be stored.
    jax.debug.callback(lambda _: None, x)
    return x * 2


def test_a_program_that_cannot_be_stored_is_exported_once(store, monkeypatch):
    """It runs as the plain jit, and later calls do not try (trace and export) again."""
    exports = []
    real = program_store._load_or_export
    monkeypatch.setattr(program_store, "_load_or_export",
                        lambda *args: exports.append(1) or real(*args))
    fn = program_store.stored_jit(_with_a_host_callback, static_argnums=())
    x = np.arange(3.0, dtype=np.float32)
    for scale in (1.0, 2.0, 3.0):
        np.testing.assert_allclose(fn(x * scale), x * scale * 2)
    assert exports == [1]
    assert not list(store.glob("*.bin"))
