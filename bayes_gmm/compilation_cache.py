"""JAX's persistent compilation cache, on by default, so that a second process starts warm.

On small data, compiling the XLA programs costs far more than running them (seconds
against milliseconds). JAX can keep compiled programs on disk and load them in the next
process instead of compiling again; this module decides where, and switches that on once,
when ``bayes_gmm`` is imported. The folder is, in order:

1. ``$BAYES_GMM_CACHE_DIR`` when set; set to ``0``, ``off``, ``false``, ``none`` (any
   case) or to nothing, it turns the cache off;
2. ``$XDG_CACHE_HOME/bayes_gmm/jax``;
3. ``~/.cache/bayes_gmm/jax``.

A cache folder the user gave JAX itself (``jax.config.update("jax_compilation_cache_dir",
...)`` or ``$JAX_COMPILATION_CACHE_DIR``) is left as it is, with all of JAX's cache
settings. A folder that cannot be created or written (a read-only home) means no cache,
silently: the cache only saves time. :func:`configure` moves or turns off the cache while
a program runs; ``compilation_cache = "folder"`` or ``false`` in an experiment config does
the same for one ``bayes-gmm run``.

JAX writes a program to the cache only when it took at least
``jax_persistent_cache_min_compile_time_secs`` to compile (1 s by default). Most programs
here compile faster than that, and together they are the seconds a first fit costs, so
where this module turns the cache on it lowers that threshold to 0 (unless the user set
it). JAX opens the cache lazily, at the first compilation, and then keeps it; moving it
afterwards therefore also resets JAX's handle on the old one.

The cache is trusted code: share its folder with no one you would not let run programs
on your machine (JAX's warning on ``set_cache_dir``).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache as _jax_cache

ENV_VAR = "BAYES_GMM_CACHE_DIR"
OFF_VALUES = frozenset({"", "0", "off", "false", "none"})

# JAX's default; a different value means the user chose one, and it is kept.
_JAX_DEFAULT_MIN_COMPILE_TIME = 1.0

# The folder this module last gave JAX, to tell it from one the user gave JAX.
_set_by_us: str | None = None


def default_directory(environ=None) -> Path | None:
    """The cache folder that the environment asks for (the rules of the module docstring).

    Parameters
    ----------
    environ : mapping, optional
        The environment variables; by default :data:`os.environ`.

    Returns
    -------
    pathlib.Path or None
        An absolute folder, or None where ``$BAYES_GMM_CACHE_DIR`` turns the cache off.
        The folder may not exist yet.
    """
    environ = os.environ if environ is None else environ
    if ENV_VAR in environ:
        value = environ[ENV_VAR].strip()
        if value.lower() in OFF_VALUES:
            return None
        return Path(value).expanduser().absolute()
    # XDG says to ignore a relative (or empty) $XDG_CACHE_HOME.
    xdg = environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "bayes_gmm" / "jax"


def directory() -> Path | None:
    """The folder JAX's persistent compilation cache uses now, or None when it is off."""
    path = jax.config.jax_compilation_cache_dir
    return Path(path) if path else None


def configure(folder) -> Path | None:
    """Move the persistent compilation cache, or turn it off, from now on.

    Programs already compiled in this process stay in memory; the setting decides where
    programs compiled from now on are looked up and written.

    Parameters
    ----------
    folder : str, path-like, bool or None
        The folder to use (created if missing); ``None`` or ``False`` turns the cache off;
        ``True`` restores the default (:func:`enable_default`). A folder given here
        replaces one the user gave JAX.

    Returns
    -------
    pathlib.Path or None
        The folder in use, or None when the cache is off. A folder that cannot be created
        or written gives None and a :class:`RuntimeWarning` naming it.

    Examples
    --------
    >>> import bayes_gmm
    >>> previous = bayes_gmm.compilation_cache.directory()
    >>> bayes_gmm.compilation_cache.configure(None)  # off
    >>> _ = bayes_gmm.compilation_cache.configure(previous)
    """
    if folder is True:
        return enable_default()
    if folder is None or folder is False:
        return _switch(None, warn=False)
    return _switch(Path(folder).expanduser().absolute(), warn=True)


def enable_default(environ=None) -> Path | None:
    """Turn the cache on where the environment says, unless the user set JAX's own folder.

    Called once by ``import bayes_gmm``; silent whatever happens.

    Parameters
    ----------
    environ : mapping, optional
        The environment variables; by default :data:`os.environ`.

    Returns
    -------
    pathlib.Path or None
        The folder in use, or None when the cache is off.
    """
    environ = os.environ if environ is None else environ
    users = _users_jax_folder(environ)
    if users is None:
        return _switch(default_directory(environ), warn=False)
    if users != jax.config.jax_compilation_cache_dir:  # moved by configure: give it back
        _set_jax_folder(users)
    return Path(users)


def _users_jax_folder(environ) -> str | None:
    """The folder the user gave JAX itself, if any (this module never overrides it)."""
    current = jax.config.jax_compilation_cache_dir
    if current and current != _set_by_us:
        return current
    return environ.get("JAX_COMPILATION_CACHE_DIR") or None


def _switch(folder: Path | None, *, warn: bool) -> Path | None:
    if folder is not None and not _writable_folder(folder):
        if warn:
            import warnings

            warnings.warn(
                f"the compilation cache folder {str(folder)!r} cannot be created or "
                "written, so programs are not cached (each process compiles them again). "
                "Pass a writable folder, or None to turn the cache off.",
                RuntimeWarning, stacklevel=3,
            )
        folder = None
    global _set_by_us
    _set_by_us = None if folder is None else str(folder)
    if _set_by_us and jax.config.jax_persistent_cache_min_compile_time_secs == (
            _JAX_DEFAULT_MIN_COMPILE_TIME) and (
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ):
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    _set_jax_folder(_set_by_us)
    return folder


def _set_jax_folder(folder: str | None) -> None:
    if folder != jax.config.jax_compilation_cache_dir:
        _jax_cache.set_cache_dir(folder)
        # JAX opened the old folder at its first compilation and would keep using it.
        _jax_cache.reset_cache()


def _writable_folder(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


__all__ = ["configure", "default_directory", "directory", "enable_default"]
