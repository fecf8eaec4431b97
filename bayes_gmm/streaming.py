"""Data larger than memory: chunked sources, and EM that streams them.

A :class:`ChunkedSource` reads the data one chunk at a time, as often as asked: a
``numpy.memmap`` (``numpy.load(path, mmap_mode="r")``), a path to a ``.npy`` file or to a
directory of ``.npy`` shards, a list of arrays, or a zero-argument callable that returns a
fresh iterator of arrays. Every chunk is checked as it is read (2-D, the same number of
features, finite); a bad chunk stops the fit with an error that names it, and nothing is
returned. Empty chunks are skipped.

:func:`fit_map_streaming` is :func:`bayes_gmm.fit_map` for such a source. It runs the same
EM in Python, one pass over the source per EM step: the chunks are re-cut into blocks of
``chunk_size`` rows (the last one padded with masked rows, so that one compiled program
serves every block), and each block goes through the fused E-step of :mod:`bayes_gmm.em`
(its statistics, M-step, convergence test and history are the in-memory fit's own
functions). The moments of the blocks are summed and the M-step follows the pass. Memory
holds one block and its (K, D, C) temporaries, O(chunk x K x D), never O(N x K). With
several devices each block is split over them as in :mod:`bayes_gmm.sharding`.

What differs from the in-memory fit: one more pass comes first, for the number of rows,
the data mean (the frame EM works in) and a uniform random sample of
``init_sample_size`` rows; k-means++ and ``"random_from_data"`` pick their centres from
that sample (one further pass then assigns every point to its nearest centre for the
first M-step), and ``"random"`` draws its responsibilities block by block. Starts
therefore differ from the in-memory fit's with the same key; from the same given
``init_params`` the two fits agree to rounding. A fit is not jitted as a whole, so it
cannot run under ``jax.jit`` or ``jax.vmap``.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bayes_gmm.covariance import KINDS
from bayes_gmm.em import (
    GMMParams,
    _best_result,
    _check_static,
    _chunk_rows,
    _em_update,
    _finish_statistics,
    _keep_going,
    _split_rows,
    _start_state,
    _statistics_pass,
    _sum_chunks,
    m_step,
)
from bayes_gmm.initialization import kmeans_plus_plus
from bayes_gmm.priors import GMMPrior
from bayes_gmm.sharding import device_chunks, resolve_mesh, rows_per_device

# Rows per block when no chunk_size is given: 2.6 MB of float32 at D = 10, and few
# enough blocks that the per-block dispatch (tens of microseconds) is negligible.
DEFAULT_CHUNK_ROWS = 2**16


class ChunkedSource:
    """Data read one chunk at a time, as many times as asked.

    Parameters
    ----------
    data : numpy.memmap or ndarray, str or os.PathLike, list of arrays, or callable
        - an array (typically ``numpy.load(path, mmap_mode="r")``): read ``chunk_size``
          rows at a time;
        - a path to a ``.npy`` file, opened memory-mapped; or to a directory, whose
          ``*.npy`` files (sorted by name) are the shards of one data set, in that order,
          each opened memory-mapped (same number of columns and dtype, checked on opening);
        - a list or tuple of 2-D arrays: the chunks;
        - a zero-argument callable returning a fresh iterable of 2-D arrays each time it is
          called (EM reads the data once per step), e.g. ``lambda: reader(path)``.

        A plain iterator or generator can be read only once, so it is refused: wrap the
        code that makes it in a function, pass a list, or write the chunks to ``.npy``
        shards.
    chunk_size : int, optional
        Rows read at a time from arrays and files; default :data:`DEFAULT_CHUNK_ROWS`.
        List elements and the callable's arrays are taken as they come.

    Attributes
    ----------
    n_features : int or None
        D; None for a callable until the first chunk has been read.
    dtype : numpy.dtype or None
        Of the results: float32 or float64 as the (first) chunk, integers as float64
        (float32 when JAX's x64 mode is off).
    """

    def __init__(self, data, chunk_size: int | None = None):
        if isinstance(data, ChunkedSource):
            chunk_size = data.chunk_size if chunk_size is None else chunk_size
            data = data._data
        if isinstance(data, Iterator):
            raise TypeError(
                "data is a one-shot iterator, but EM reads the data once per step. Pass a "
                "zero-argument function that returns a fresh iterator (e.g. lambda: "
                "read_chunks(path)), a list of arrays, or a directory of .npy shards."
            )
        self._data = data
        self.chunk_size = DEFAULT_CHUNK_ROWS if chunk_size is None else int(chunk_size)
        self.n_features = self.dtype = None
        self._parts = None  # arrays and memmaps, or None for a callable
        self._names = None  # shard file names, for messages
        self._slice = True  # read the parts chunk_size rows at a time (arrays and files)
        if isinstance(data, str | os.PathLike):
            self._parts, self._names = _open_npy(Path(data))
        elif isinstance(data, np.ndarray):
            self._parts = [data]
        elif isinstance(data, list | tuple):
            self._parts, self._slice = list(data), False
        elif not callable(data):
            raise TypeError(
                "data must be an array or numpy.memmap, a path to a .npy file or a directory "
                "of .npy shards, a list of arrays or a zero-argument function returning an "
                f"iterator of arrays; got {type(data).__name__}."
            )
        if self._parts:
            first = next((np.asarray(p) for p in self._parts if np.size(p)), None)
            if first is not None and first.ndim == 2:
                self.n_features, self.dtype = first.shape[1], _result_dtype(first.dtype)

    def _raw_chunks(self):
        if self._parts is None:
            yield from ((None, chunk) for chunk in self._data())
            return
        for number, part in enumerate(self._parts):
            where = None if self._names is None else self._names[number]
            if not self._slice or np.ndim(part) != 2:
                yield where, part
                continue
            release = _page_release(part)
            for start in range(0, max(part.shape[0], 1), self.chunk_size):
                chunk = part[start:start + self.chunk_size]
                yield where, chunk
                release(chunk)

    def chunks(self):
        """The checked chunks in order, as arrays of shape (rows, n_features) and
        :attr:`dtype`; empty ones skipped.

        Raises
        ------
        ValueError
            A chunk that is not 2-D, has another number of features than the first, or
            holds NaN or infinite values; the message gives its index.
        """
        for index, (where, chunk) in enumerate(self._raw_chunks()):
            name = f"chunk {index}" + (f" (in {where})" if where else "")
            array = np.asarray(chunk)
            if array.size == 0:
                continue
            if array.ndim != 2:
                raise ValueError(
                    f"{name} of the data must be 2-D (rows, features); got shape "
                    f"{array.shape}. Reshape it, e.g. chunk.reshape(-1, n_features)."
                )
            if array.dtype.kind not in "fiub":
                raise TypeError(f"{name} of the data must be real numbers; got {array.dtype}.")
            if self.n_features is None:
                self.n_features, self.dtype = array.shape[1], _result_dtype(array.dtype)
            if array.shape[1] != self.n_features:
                raise ValueError(
                    f"{name} of the data has {array.shape[1]} features; the first chunk had "
                    f"{self.n_features}. Every chunk must have the same columns."
                )
            array = array.astype(self.dtype, copy=False)
            finite = np.isfinite(array)
            if not finite.all():
                row, column = np.argwhere(~finite)[0]
                raise ValueError(
                    f"{name} of the data contains NaN or infinite values (first at row {row}, "
                    f"column {column} of the chunk); the fit stopped and returns no result. "
                    "Drop or impute those rows and fit again."
                )
            yield array

    def moments(self):
        """One pass: the number of rows, the mean (D,) and the covariance (D, D), in
        float64 (moments taken about the first chunk's mean, against cancellation)."""
        n, centre, total, scatter = 0, None, None, None
        for chunk in self.chunks():
            chunk = chunk.astype(np.float64)
            if centre is None:
                centre = chunk.mean(axis=0)
                total, scatter = np.zeros_like(centre), np.zeros((len(centre),) * 2)
            deviation = chunk - centre
            n += len(chunk)
            total += deviation.sum(axis=0)
            scatter += deviation.T @ deviation
        if n == 0:
            raise ValueError("The data source holds no rows. Pass at least one non-empty chunk.")
        offset = total / n
        cov = (scatter - n * np.outer(offset, offset)) / max(n - 1, 1)
        return n, centre + offset, cov


def _result_dtype(dtype) -> np.dtype:
    floating = dtype if np.issubdtype(dtype, np.floating) else np.float64
    return np.dtype(jax.dtypes.canonicalize_dtype(floating))


def _open_npy(path: Path):
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise ValueError(
                f"{path} holds no .npy files. Save the shards with numpy.save(path / "
                "'part-0000.npy', rows), one 2-D array per file."
            )
    elif path.suffix == ".npy" and path.is_file():
        files = [path]
    else:
        raise ValueError(
            f"{path} is neither a .npy file nor a directory of .npy shards. Save the data "
            "with numpy.save, or pass a numpy.memmap or a function that yields arrays."
        )
    parts = [np.load(file, mmap_mode="r") for file in files]
    first = parts[0]
    for file, part in zip(files, parts, strict=True):
        if part.ndim != 2 or part.shape[1] != first.shape[1] or part.dtype != first.dtype:
            raise ValueError(
                f"Every shard must be a 2-D array with the columns and dtype of the first "
                f"({files[0].name}: {first.shape[1]} columns of {first.dtype}); {file.name} "
                f"has shape {part.shape} and dtype {part.dtype}."
            )
    return parts, [file.name for file in files]


def _page_release(part):
    """A function that drops a read chunk's pages of a read-only memory-mapped file from
    this process's resident memory, or does nothing for other arrays.

    The kernel keeps the pages of a mapping resident after they are read, so streaming a
    file through ``numpy.memmap`` would grow the resident set (RSS) to the size of the
    file. ``madvise(MADV_DONTNEED)`` unmaps them once a chunk has been consumed (its rows
    were copied into the compiled program's input); the file is not touched and the pages
    stay in the page cache, where a later pass finds them. Only read-only mappings
    (``mode="r"``): in a private copy-on-write mapping it would discard changes.
    """
    handle = getattr(part, "_mmap", None)
    if (handle is None or getattr(part, "mode", None) != "r" or not part.flags.c_contiguous
            or not hasattr(handle, "madvise")):
        return lambda chunk: None
    base = np.frombuffer(handle, np.uint8).ctypes.data  # where the mapping starts
    page = mmap.PAGESIZE

    def release(chunk):
        if chunk.size == 0:
            return
        start = chunk.ctypes.data - base
        aligned = start - start % page
        handle.madvise(mmap.MADV_DONTNEED, aligned, start + chunk.nbytes - aligned)

    return release


def is_chunked(x) -> bool:
    """Whether ``x`` is read in chunks (:class:`ChunkedSource` takes it) rather than whole."""
    if isinstance(x, ChunkedSource | np.memmap | str | os.PathLike | Iterator):
        return True
    if isinstance(x, list | tuple):
        return bool(x) and all(getattr(a, "ndim", None) == 2 for a in x)
    return callable(x) and not hasattr(x, "__array__")


def points_with_moments(n_samples, mean, cov) -> np.ndarray:
    """2 D points whose mean and covariance are exactly ``mean`` and ``cov``.

    :func:`bayes_gmm.default_prior` takes points; these stand in for data that are only
    streamed, so that its defaults (and their eigenvalue floor) apply unchanged. The
    points are ``mean +- sqrt(lambda_j (2 D - 1) / 2) u_j`` over the eigenpairs of ``cov``.
    One row (the mean) when ``n_samples < 2``, as the data then carry no scale.
    """
    mean = np.asarray(mean, np.float64)
    if n_samples < 2:
        return mean[None]
    values, vectors = np.linalg.eigh(cov)
    root = vectors * np.sqrt(np.maximum(values, 0.0) * (2 * len(mean) - 1) / 2)
    return mean + np.concatenate([root.T, -root.T])


# --------------------------------------------------------------------------------------
# Streaming EM


def _blocks(source: ChunkedSource, rows: int):
    """The source re-cut into (rows, D) blocks, the last one zero-padded: (block, n_valid)."""
    pending, count = [], 0
    for chunk in source.chunks():
        while len(chunk):
            take = min(rows - count, len(chunk))
            pending.append(chunk[:take])
            count += take
            chunk = chunk[take:]
            if count == rows:
                yield (pending[0] if len(pending) == 1 else np.concatenate(pending)), rows
                pending, count = [], 0
    if count:
        block = np.zeros((rows, source.n_features), source.dtype)
        block[:count] = np.concatenate(pending)
        yield block, count


def _layout(a, chunk, mesh):
    """(rows, W) -> feature-major chunks (n_chunks, W, C), or per device with a mesh."""
    if mesh is None:
        return jnp.swapaxes(_split_rows(a, chunk), 1, 2)
    return device_chunks(a, mesh, chunk)


def _block_points(block, n_valid, shift, chunk, mesh):
    """A block in the centred frame with its row mask, laid out in chunks."""
    mask = (jnp.arange(block.shape[0]) < n_valid)[:, None]
    centred = jnp.where(mask, block.astype(shift.dtype) - shift, 0.0)
    return _layout(jnp.concatenate([centred, mask.astype(shift.dtype)], axis=1), chunk, mesh)


def _em_block_sums(params, block, n_valid, shift, covariance_type, chunk, mesh):
    """One block's moments under every restart's ``params`` and its summed log densities
    (less the reference), one per restart."""
    points = _block_points(block, n_valid, shift, chunk, mesh)

    def one(params):
        one_chunk, _ = _statistics_pass(params, covariance_type)
        sums, deviations = _sum_chunks(one_chunk, points, mesh)
        return sums, jnp.sum(deviations)

    return jax.vmap(one)(params)


@partial(jax.jit, static_argnames=("covariance_type", "chunk", "mesh"), donate_argnums=0)
def _em_block(totals, *args, **static):
    sums, deviations = _em_block_sums(*args, **static)
    return jax.tree.map(jnp.add, totals, sums), deviations


@partial(jax.jit, static_argnames=("covariance_type", "max_iter", "keep_history"))
def _em_step(states, totals, deviations, n_samples, prior, tol, covariance_type, max_iter,
             keep_history):
    """The M-step after a pass, for every restart still running (the others are kept)."""

    def one(state, sums, deviations):
        _, finish = _statistics_pass(state.next_params, covariance_type)
        stats, loglik = finish(sums, n_samples, deviations)
        new = _em_update(state, stats, loglik, prior, covariance_type, tol, keep_history)
        running = _keep_going(state, max_iter)
        return jax.tree.map(lambda a, b: jnp.where(running, a, b), new, state)

    return jax.vmap(one)(states, totals, deviations.T)


def _init_block_sums(centres, keys, block, n_valid, index, shift, covariance_type, method,
                     chunk, mesh):
    """One block's moments about ``centres`` under the initial responsibilities: the
    nearest centre, or (``method="random"``) random soft ones drawn for this block."""
    kind = KINDS[covariance_type]
    n_features = block.shape[1]
    n_components = centres.shape[1]
    points = _block_points(block, n_valid, shift, chunk, mesh)
    valid = (jnp.arange(block.shape[0]) < n_valid)[:, None]

    def one(centres, key):
        whitening = kind.whitening(centres, None)
        if method == "random":
            r = jax.random.uniform(jax.random.fold_in(key, index),
                                   (block.shape[0], n_components), shift.dtype)
            r = jnp.where(valid, r / jnp.sum(r, axis=1, keepdims=True), 0.0)

            def random_chunk(chunk):
                points, r = chunk
                return kind.moments(r, kind.whiten(points, whitening), points), None

            return _sum_chunks(random_chunk, (points, _layout(r, chunk, mesh)), mesh)[0]

        def nearest_chunk(points):
            y = kind.whiten(points, whitening)  # (K, D, C): the points less each centre
            nearest = jnp.argmin(jnp.sum(y * y, axis=1), axis=0)
            r = jax.nn.one_hot(nearest, n_components, dtype=y.dtype).T * points[n_features]
            return kind.moments(r, y, points), None

        return _sum_chunks(nearest_chunk, points, mesh)[0]

    return jax.vmap(one)(centres, keys), None


@partial(jax.jit, static_argnames=("covariance_type", "method", "chunk", "mesh"),
         donate_argnums=0)
def _init_block(totals, *args, **static):
    return jax.tree.map(jnp.add, totals, _init_block_sums(*args, **static)[0])


@partial(jax.jit, static_argnames=("covariance_type",))
def _init_params(totals, centres, prior, given, covariance_type):
    kind = KINDS[covariance_type]

    def one(sums, centres):
        whitening = kind.whitening(centres, None)
        counts, first, second = kind.totals(sums, whitening)
        stats = _finish_statistics(counts, first, second, centres, kind)
        params = m_step(stats, prior, covariance_type)
        return GMMParams(*(p if g is None else g for g, p in zip(given, params, strict=True)))

    return jax.vmap(one)(totals, centres)


@partial(jax.jit, static_argnames=("max_iter",))
def _any_running(states, max_iter):
    return jnp.any(jax.vmap(partial(_keep_going, max_iter=max_iter))(states))


@partial(jax.jit, static_argnames=("n_components", "method"))
def _sample_centres(keys, sample, n_components, method):
    def one(key):
        if method == "random_from_data":
            idx = jax.random.choice(key, sample.shape[0], (n_components,), replace=False)
            return sample[idx]
        return kmeans_plus_plus(key, sample, n_components)

    return jax.vmap(one)(keys)


def _zeros_like_output(fn, *args, **static):
    """Zeros shaped like ``fn``'s first output: the totals before the first block."""
    shapes = jax.eval_shape(partial(fn, **static), *args)[0]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _first_pass(source: ChunkedSource, seed, sample_size):
    """Rows, mean (float64) and a uniform sample of ``sample_size`` rows (in their order):
    the rows with the smallest of one uniform key per row."""
    rng = np.random.default_rng(seed)
    n, total = 0, 0.0
    keys, sample = np.empty(0), None
    for chunk in source.chunks():
        total = total + chunk.sum(axis=0, dtype=np.float64)
        if sample_size:
            keys = np.concatenate([keys, rng.random(len(chunk))])
            sample = chunk if sample is None else np.concatenate([sample, chunk])
            if len(keys) > sample_size:
                keep = np.sort(np.argpartition(keys, sample_size)[:sample_size])
                keys, sample = keys[keep], sample[keep]
        n += len(chunk)
    if n == 0:
        raise ValueError("The data source holds no rows. Pass at least one non-empty chunk.")
    return n, total / n, sample


def fit_map_streaming(
    key,
    source,
    prior: GMMPrior,
    init_params: GMMParams | None = None,
    *,
    covariance_type: str = "full",
    init: str = "k-means++",
    n_init: int = 1,
    max_iter: int = 100,
    tol=1e-6,
    keep_history: bool = False,
    chunk_size: int | None = None,
    mesh="auto",
    init_sample_size: int | None = None,
):
    """The MAP estimate by EM, streaming the data from a chunked source.

    Same arguments and results as :func:`bayes_gmm.fit_map` (which calls this for a
    chunked ``x``); the module docstring says what differs.

    Parameters
    ----------
    key : jax.Array
    source : ChunkedSource or anything it takes
        For example ``numpy.load("x.npy", mmap_mode="r")`` or ``"shards/"``, a directory
        of ``.npy`` files read in sorted order.
    prior : GMMPrior
        Build the default with :func:`default_prior_from_source` (one pass) or
        :func:`bayes_gmm.default_prior` on a sample.
    chunk_size : int, optional
        Rows per block (read, sent to the device and processed at once), default
        :data:`DEFAULT_CHUNK_ROWS`; memory is O(chunk_size x K x D).
    init_sample_size : int, optional
        Rows drawn uniformly in the first pass for k-means++ and "random_from_data";
        default ``max(10000, 100 K)``.

    Returns
    -------
    params : GMMParams
    info : EMInfo
    """
    source = ChunkedSource(source, chunk_size)
    mesh = resolve_mesh(mesh)
    n_components = int(np.shape(prior.weight_concentration)[0])
    given = None
    if init_params is not None:
        given = GMMParams(*(None if a is None else np.asarray(a) for a in init_params))
    complete = given is not None and all(a is not None for a in given)
    needs_sample = not complete and (given is None or given.means is None) and init != "random"
    if init_sample_size is None:
        init_sample_size = max(10_000, 100 * n_components)
    if source.n_features is not None:  # settings checked before a pass over the data
        _check_static(jax.ShapeDtypeStruct((1, source.n_features), source.dtype), prior,
                      covariance_type, init, n_init, max_iter)
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    n_samples, mean, sample = _first_pass(source, seed, init_sample_size if needs_sample else 0)
    n_features, dtype = source.n_features, source.dtype
    _check_static(jax.ShapeDtypeStruct((n_samples, n_features), dtype), prior,
                  covariance_type, init, n_init, max_iter)
    if n_samples < n_components:
        raise ValueError(
            f"The data have {n_samples} row(s) but the prior has {n_components} components. "
            "Pass more data or fewer components."
        )
    rows = min(source.chunk_size, n_samples)
    per_device = rows if mesh is None else rows_per_device(rows, mesh)
    chunk = _chunk_rows(per_device, n_components, n_features, None)

    shift = jnp.asarray(mean, dtype)
    prior = GMMPrior(*(jnp.asarray(a, dtype) for a in prior))
    prior = prior._replace(mean=prior.mean - shift)
    if given is not None:
        given = GMMParams(*(None if a is None else jnp.asarray(a, dtype) for a in given))
        if given.means is not None:
            given = given._replace(means=given.means - shift)
    n_starts = 1 if complete else n_init
    keys = jax.random.split(key, n_starts)

    if complete:
        params = jax.tree.map(lambda a: a[None], given)
    else:
        if given is not None and given.means is not None:
            centres = jnp.broadcast_to(given.means, (n_starts, n_components, n_features))
        elif init == "random":
            centres = jnp.zeros((n_starts, n_components, n_features), dtype)
        else:
            sample = jnp.asarray(sample, dtype) - shift
            centres = _sample_centres(keys, sample, n_components, init)
        method = "random" if init == "random" and (given is None or given.means is None) \
            else "nearest"
        static = dict(covariance_type=covariance_type, method=method, chunk=chunk, mesh=mesh)
        totals = None
        for index, (block, n_valid) in enumerate(_blocks(source, rows)):
            args = (centres, keys, block, n_valid, index, shift)
            if totals is None:
                totals = _zeros_like_output(_init_block_sums, *args, **static)
            totals = _init_block(totals, *args, **static)
        params = _init_params(totals, centres, prior, given or GMMParams(None, None, None),
                              covariance_type)

    states = jax.vmap(lambda p: _start_state(p, max_iter + 1, keep_history, dtype))(params)
    tol = jnp.asarray(tol, dtype)
    n_total = jnp.asarray(n_samples, dtype)
    static = dict(covariance_type=covariance_type, chunk=chunk, mesh=mesh)
    while bool(_any_running(states, max_iter)):
        totals, deviations = None, []
        for block, n_valid in _blocks(source, rows):
            args = (states.next_params, block, n_valid, shift)
            if totals is None:
                totals = _zeros_like_output(_em_block_sums, *args, **static)
            totals, block_deviations = _em_block(totals, *args, **static)
            deviations.append(block_deviations)
        states = _em_step(states, totals, jnp.stack(deviations), n_total, prior, tol,
                          covariance_type=covariance_type, max_iter=max_iter,
                          keep_history=keep_history)
    return _best_result(states, shift, keep_history)


def default_prior_from_source(source, n_components, covariance_type="full", **overrides):
    """:func:`bayes_gmm.default_prior` for streamed data, from one pass of moments."""
    from bayes_gmm.priors import default_prior

    n_samples, mean, cov = ChunkedSource(source).moments()
    return default_prior(points_with_moments(n_samples, mean, cov), n_components,
                         covariance_type, **overrides)


__all__ = ["ChunkedSource", "DEFAULT_CHUNK_ROWS", "default_prior_from_source",
           "fit_map_streaming", "is_chunked"]
