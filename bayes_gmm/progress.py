"""Progress lines of the command line: what is running now, and how long it took.

Compilation and sampling can keep a run silent for many seconds; :func:`step` names each
long step on stderr, ``[bayes-gmm] fitting the MAP (K = 2, full)... 2.4 s``, so that a
person at a terminal knows what the time goes to. The lines are off unless a caller turns
them on with :func:`reporting` (the CLI does, unless ``--quiet``), so the library and its
tests print nothing. The NUTS progress bar is not touched: a step during which it
draws (``shares_stream=True``) gets a line of its own before and after, instead of one
line finished in place.

Steps nest: :func:`bayes_gmm.select_k` names its own parts (the EM grid, each LOO
posterior) inside the CLI's "choosing K" step, indented under it. The experiment runner
and such long analyses call :func:`step`; the numerical core (EM, the samplers) knows
nothing of it. Lines come from the calling thread only: a context variable turns them
on, and worker threads start without it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
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
        Something else writes to stderr during the step (the NUTS progress bar): the
        announcement ends its line, and the time comes on a line of its own
        (``[bayes-gmm] <what>: done in 12.3 s``). Otherwise one line is finished in place
        (``[bayes-gmm] <what>... 2.4 s``).

    Notes
    -----
    Steps nest: a step begun inside another is indented under it, and the outer one then
    ends on a line of its own (``<what>: done in ...``), as with ``shares_stream``. A step
    that raises ends its line with ``failed after <time>`` (``interrupted`` for Ctrl-C),
    so the CLI's one-line error message starts on a line of its own.
    """
    if not _ENABLED.get():
        yield
        return
    stream = sys.stderr  # looked up now: tests and callers may redirect it
    outer = _OPEN.get()
    if outer is not None and outer.in_place:
        _write(stream, "\n")  # the outer step's line ends: its time comes on a line of its own
        outer.in_place = False
    this = _OpenStep(in_place=not shares_stream, depth=0 if outer is None else outer.depth + 1)
    label = f"{PREFIX} {'  ' * this.depth}{what}"
    token = _OPEN.set(this)
    began = time.perf_counter()
    _write(stream, f"{label}..." + ("" if this.in_place else "\n"))
    try:
        yield
    except BaseException as err:
        outcome = ("interrupted" if isinstance(err, KeyboardInterrupt)
                   else f"failed after {_duration(time.perf_counter() - began)}")
        _write(stream, f" {outcome}\n" if this.in_place else f"{label}: {outcome}\n")
        raise
    finally:
        _OPEN.reset(token)
    elapsed = _duration(time.perf_counter() - began)
    _write(stream, f" {elapsed}\n" if this.in_place else f"{label}: done in {elapsed}\n")


@dataclasses.dataclass
class _OpenStep:
    in_place: bool  # its line still waits for the time
    depth: int  # steps around it


_OPEN = contextvars.ContextVar("bayes_gmm_progress_open_step", default=None)


def _write(stream, text: str) -> None:
    stream.write(text)
    stream.flush()


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s"
