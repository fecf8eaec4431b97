"""Programs a second process finds ready: lowered EM programs kept beside JAX's cache.

JAX's persistent compilation cache (:mod:`bayes_gmm.compilation_cache`) saves XLA's
compilation, but every new process still *traces and lowers* each program before it can
look it up: about a second for an EM program, far more than the fit itself on small data
(a grid over four covariance types spent 5 s doing that and 0.5 s fitting). So the
programs of the user-facing entry points are also kept lowered, as ``jax.export``'s
serialised StableHLO, in the folder ``exported/`` of that cache. A later process
deserialises one (milliseconds), and XLA's compilation of it then comes from the
persistent cache.

A stored program is looked up by the function, its static arguments, the tree, shapes
and dtypes of its array arguments, the versions of Python, jax and jaxlib, a digest of
this package's source files, the backend and the JAX settings that change a program
(x64, the default matmul precision). Any change of these gives a new key, so a stale
program is never called. A file that cannot be read or written only costs the time it
would have saved; traced calls (a fit inside the user's ``jit`` or ``vmap``) and calls
with a device mesh go straight to ``jax.jit``.

On a CPU, programs on small data are compiled at LLVM -O1 (:func:`sized_jit`, by the
size of their array arguments): there compiling, not running, is the cost.

The store is trusted code, like JAX's cache: share its folder with no one you would not
let run programs on your machine.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import jax
import jaxlib
import numpy as np

from bayes_gmm import compilation_cache

SUBFOLDER = "exported"

# XLA's CPU backend compiles every fused kernel of a program through LLVM at -O3. A
# program on small data (the data of a padded problem, bayes_gmm.padding, have at most
# 2**16 elements) runs for milliseconds and compiles for seconds, so it is compiled at
# -O1: measured on Old Faithful (2026-12-06, interleaved runs), the EM program's compile
# went from 3.0-3.3 s to 2.5-2.9 s with the same run time, and the cold 36-model grid
# (benchmarks/small_data.py) from 13.8-14.6 s to 10.7-10.8 s; with -O1 forced by
# XLA_FLAGS, the Gibbs program compiled in 2.4 s against 3.7 s and ran as fast. Larger
# programs keep XLA's default.
SMALL_ELEMENTS = 2**16
SMALL_PROGRAM_OPTIONS = {"xla_backend_optimization_level": 1}


def register_pytree(cls) -> type:
    """Make a NamedTuple of arrays storable (its tree is serialised with the program)."""
    from jax import export

    export.register_namedtuple_serialization(cls, serialized_name=f"bayes_gmm.{cls.__name__}")
    return cls


def stored_jit(fn, static_argnums: tuple[int, ...]):
    """``jax.jit(fn, static_argnums=...)`` whose lowered program persists across processes.

    The static arguments must be plain values (str, int, float, bool, None).
    """
    sized = sized_jit(fn, static_argnums)
    jitted = sized.default
    loaded: dict[str, object] = {}

    @functools.wraps(fn)
    def call(*args):
        folder = _folder()
        static = tuple(args[i] for i in static_argnums)
        dynamic = tuple(a for i, a in enumerate(args) if i not in static_argnums)
        if folder is None or _is_traced(dynamic) or not all(map(_plain, static)):
            return sized(*args)
        key = _key(fn, static, dynamic)
        program = loaded.get(key)
        if program is None:
            # Exported from the plain jit (a nested jit takes no compiler options); the
            # options apply where the stored program is compiled.
            program = _load_or_export(folder / f"{fn.__name__}-{key}.bin",
                                      functools.partial(_with_static, jitted, static_argnums,
                                                        static), dynamic, fn.__name__)
            if program is None:  # not storable: the plain jit, without trying again
                program = functools.partial(_with_static, sized, static_argnums, static)
            loaded[key] = program
        return program(*dynamic)

    call.jitted = jitted  # the plain jitted function, for lowering and cache inspection
    return call


def sized_jit(fn, static_argnums=()):
    """``jax.jit(fn, static_argnums=...)`` compiled with :func:`compiler_options` of its
    array arguments (-O1 for small data on a CPU); the user's ``jit`` rules a traced call.
    ``.default`` is the jit with XLA's defaults."""
    default = jax.jit(fn, static_argnums=static_argnums)
    small = jax.jit(fn, static_argnums=static_argnums, compiler_options=SMALL_PROGRAM_OPTIONS)

    @functools.wraps(fn)
    def call(*args):
        dynamic = tuple(a for i, a in enumerate(args) if i not in static_argnums)
        if _is_traced(dynamic) or compiler_options(dynamic) is None:
            return default(*args)
        return small(*args)

    call.default = default
    return call


def compiler_options(arrays) -> dict | None:
    """The XLA options a stored program on these array arguments is compiled with:
    :data:`SMALL_PROGRAM_OPTIONS` on a CPU when no array holds more than
    :data:`SMALL_ELEMENTS` elements, else None (XLA's defaults)."""
    if jax.default_backend() != "cpu":
        return None
    sizes = [np.size(a) for a in jax.tree.leaves(arrays)]
    return dict(SMALL_PROGRAM_OPTIONS) if max(sizes, default=0) <= SMALL_ELEMENTS else None


def key_data(key) -> tuple[jax.Array, str | None]:
    """A PRNG key as plain arrays that a stored program can take: (its uint32 data, the
    name of its implementation, None for a raw uint32 key). :func:`wrap_key` undoes it."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key), str(jax.random.key_impl(key))
    return key, None


def wrap_key(data, impl: str | None):
    """The key that :func:`key_data` took apart (inside the program)."""
    return data if impl is None else jax.random.wrap_key_data(data, impl=impl)


def _with_static(jitted, static_argnums, static, *dynamic):
    args, dynamic, static = [], list(dynamic), list(static)
    for i in range(len(dynamic) + len(static)):
        args.append(static.pop(0) if i in static_argnums else dynamic.pop(0))
    return jitted(*args)


def _load_or_export(path: Path, fn, dynamic, name: str):
    """The program from ``path``, else exported from ``fn`` and written there; None if
    ``jax.export`` cannot serialise (flatbuffers missing) or the program does not export."""
    try:
        from jax import export
    except ImportError:  # pragma: no cover - jax always has it
        return None
    exported = None
    if path.is_file():
        try:
            exported = export.deserialize(bytearray(path.read_bytes()))
        except Exception:  # a truncated or foreign file: export anew
            exported = None
    if exported is None:
        try:
            exported = export.export(jax.jit(fn))(*dynamic)
            _write_atomically(path, exported.serialize())
        except (ImportError, ValueError, TypeError, NotImplementedError):
            # ImportError: jax's serialiser needs flatbuffers; the others: a tree or a
            # primitive that export does not support. The plain jit then serves.
            return None
    return jax.jit(_named(exported.call, name), compiler_options=compiler_options(dynamic))


def _named(call, name: str):
    """``call`` under the stored function's name, so that JAX's logs and profiles say
    ``jit(_fit_map_core)`` rather than ``jit(call)``."""

    def run(*args):
        return call(*args)

    run.__name__ = run.__qualname__ = name
    return run


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only folder: the next process exports again


def _folder() -> Path | None:
    cache = compilation_cache.directory()
    return None if cache is None else cache / SUBFOLDER


def _is_traced(tree) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(tree))


def _plain(value) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _key(fn, static, dynamic) -> str:
    leaves, tree = jax.tree.flatten(dynamic)
    avals = [str(jax.typeof(a)) for a in leaves]  # shape, dtype, "~" when weakly typed
    parts = (
        fn.__module__, fn.__qualname__, repr(static), str(tree), repr(avals),
        sys.version, jax.__version__, jaxlib.__version__, _source_digest(),
        jax.default_backend(), str(jax.config.jax_enable_x64),
        str(jax.config.jax_default_matmul_precision),
    )
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


@functools.cache
def _source_digest() -> str:
    """A digest of every source file of the package: a stored program belongs to one."""
    root = Path(__file__).parent
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


__all__ = ["SMALL_ELEMENTS", "SMALL_PROGRAM_OPTIONS", "compiler_options", "key_data",
           "register_pytree", "sized_jit", "stored_jit", "wrap_key"]
