"""Progress lines of the command line: what is running now, and how long it took.

Compilation and sampling can keep a run silent for many seconds; :func:`step` names each
long step on stderr, ``[bayes-gmm] fitting the MAP (K = 2, full)... 2.4 s``, so that a
person at a terminal knows what the time goes to. The lines are off unless a caller turns
them on with :func:`reporting` (the CLI does, unless ``--quiet``), so the library and its
tests print nothing. NumPyro's own progress bar is not touched: a step during which it
draws (``shares_stream=True``) gets a line of its own before and after, instead of one
line finished in place.

This is part of the user-facing layer (``app/`` in the design): the experiment runner
calls :func:`step`; nothing in the numerical core knows about it.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time

PREFIX = "[bayes-gmm]"

_ENABLED = contextvars.ContextVar("bayes_gmm_progress", default=False)


@contextlib.contextmanager
def reporting(enabled: bool = True):
    """Turn the progress lines of :func:`step` on (or off) inside the ``with`` block.

    Parameters
    ----------
    enabled : bool, default True
    """
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def enabled() -> bool:
    """Whether :func:`step` prints (inside ``reporting(True)``)."""
    return _ENABLED.get()


@contextlib.contextmanager
def step(what: str, *, shares_stream: bool = False):
    """Announce ``what`` on stderr while the ``with`` block runs, then its time.

    Parameters
    ----------
    what : str
        What is running, as a person would say it: ``"fitting the MAP (K = 2, full)"``.
    shares_stream : bool, default False
        Something else writes to stderr during the step (NumPyro's progress bar): the
        announcement ends its line, and the time comes on a line of its own
        (``[bayes-gmm] <what>: done in 12.3 s``). Otherwise one line is finished in place
        (``[bayes-gmm] <what>... 2.4 s``).

    Notes
    -----
    A step that raises ends its line with ``failed after <time>`` (``interrupted`` for
    Ctrl-C), so the CLI's one-line error message starts on a line of its own.
    """
    if not _ENABLED.get():
        yield
        return
    stream = sys.stderr  # looked up now: tests and callers may redirect it
    began = time.perf_counter()
    _write(stream, f"{PREFIX} {what}..." + ("\n" if shares_stream else " "))
    try:
        yield
    except BaseException as err:
        outcome = ("interrupted" if isinstance(err, KeyboardInterrupt)
                   else f"failed after {_duration(time.perf_counter() - began)}")
        _write(stream, f"{PREFIX} {what}: {outcome}\n" if shares_stream else f"{outcome}\n")
        raise
    elapsed = _duration(time.perf_counter() - began)
    _write(stream, f"{PREFIX} {what}: done in {elapsed}\n" if shares_stream
           else f"{elapsed}\n")


def _write(stream, text: str) -> None:
    stream.write(text)
    stream.flush()


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s"
