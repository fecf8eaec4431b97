"""Streaming EM against the in-memory fit: the same numbers from chunks of any size (empty
ones included), from memory-mapped files and directories of shards; bad chunks stop the
fit with an error that names them."""

import jax
import numpy as np
import pytest
from conftest import DTYPE, EPS, X64, two_clusters

from bayes_gmm import BayesianGMM, GMMParams, default_prior, fit_map
from bayes_gmm.streaming import ChunkedSource, default_prior_from_source, fit_map_streaming

# Rounding of a sum over N points, accumulated in another order.
RTOL = 1e-10 if X64 else 2e-4
SIZES = (7, 0, 50, 13, 101, 0, 3)  # then the rest: 271 of 500 rows in odd pieces


@pytest.fixture(scope="module")
def x():
    return two_clusters(seed=3, n=(280, 220), d=3)


@pytest.fixture(scope="module")
def pieces(x):
    return np.split(x, np.cumsum(SIZES))


@pytest.fixture(scope="module")
def start(x):
    prior = default_prior(x, 2)
    return prior, GMMParams(np.array([0.3, 0.7]), x[[0, 499]], np.stack([np.eye(3)] * 2))


@pytest.fixture(scope="module")
def in_memory(x, start):
    # tol < 0: exactly max_iter steps (a fixed point is reached to the last digit, which
    # rounding would reach one step sooner or later).
    prior, init = start
    return fit_map(jax.random.key(0), x, prior, init, max_iter=12, tol=-1.0, chunk_size=32)


def assert_same_fit(a, b, rtol=RTOL):
    (params_a, info_a), (params_b, info_b) = a, b
    assert int(info_a.n_iter) == int(info_b.n_iter)
    for u, v in zip(params_a, params_b, strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(info_a.history, info_b.history, rtol=rtol)
    np.testing.assert_allclose(info_a.log_likelihood, info_b.log_likelihood, rtol=rtol)


def test_uneven_chunks_equal_in_memory_fit(pieces, start, in_memory):
    prior, init = start
    # 32 rows per block divides neither N nor any chunk, and one block spans several chunks.
    streamed = fit_map(jax.random.key(0), pieces, prior, init, max_iter=12, tol=-1.0,
                       chunk_size=32)
    assert streamed[0].means.dtype == DTYPE
    assert_same_fit(in_memory, streamed)


def test_memmap_file_and_shard_directory(tmp_path, x, pieces, start, in_memory):
    prior, init = start
    np.save(tmp_path / "x.npy", x)
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, piece in enumerate(pieces):  # empty shards included
        np.save(shards / f"part-{i:03d}.npy", piece)
    for source in (np.load(tmp_path / "x.npy", mmap_mode="r"), tmp_path / "x.npy",
                   str(shards), ChunkedSource(shards, chunk_size=32)):
        fit = fit_map(jax.random.key(0), source, prior, init, max_iter=12, tol=-1.0,
                      chunk_size=32)
        assert_same_fit(in_memory, fit)


def test_sampled_and_random_starts(x, pieces):
    prior = default_prior(x, 2)
    for init, sample in (("k-means++", 40), ("random", None)):
        params, info = fit_map_streaming(jax.random.key(0), lambda: iter(pieces), prior,
                                         init=init, chunk_size=32, init_sample_size=sample,
                                         n_init=2, keep_history=True)
        assert np.isfinite(float(info.log_posterior)) and bool(info.converged)
        assert info.init_log_posteriors.shape == (2,)
        assert info.params_history.means.shape == (101, 2, 3)
        assert np.all(np.isfinite(np.asarray(params.covariances)))


def test_estimator_streams_a_memmap(tmp_path, x, start):
    # The settings of the in-memory fixture, so that both fits reuse its compiled programs.
    _, init = start
    np.save(tmp_path / "x.npy", x)
    kwargs = dict(n_components=2, chunk_size=32, max_iter=12, weights_init=init.weights,
                  means_init=init.means, covariances_init=init.covariances)
    streamed = BayesianGMM(**kwargs).fit(np.load(tmp_path / "x.npy", mmap_mode="r"))
    whole = BayesianGMM(**kwargs).fit(x)
    rtol = 1e-9 if X64 else 1e-3
    np.testing.assert_allclose(streamed.means_, whole.means_, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(streamed.lower_bound_, whole.lower_bound_,
                               rtol=1e-10 if X64 else 1e-5)
    assert streamed.n_iter_ == whole.n_iter_
    # The default prior from streamed moments is the in-memory one.
    for a, b in zip(streamed.prior_, whole.prior_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert np.array_equal(streamed.predict(x), whole.predict(x))


def test_default_prior_from_source(x, pieces):
    for a, b in zip(default_prior_from_source(pieces, 3, "spherical"),
                    default_prior(x, 3, "spherical"), strict=True):
        np.testing.assert_allclose(a, b, rtol=max(1e-10, 10 * EPS), atol=1e-12)


def test_bad_chunks_stop_the_fit(tmp_path, x, pieces, start):
    prior, init = start
    bad = [p.copy() for p in pieces]
    bad[2][5, 1] = np.nan
    with pytest.raises(ValueError, match=r"chunk 2 .*NaN.*row 5, column 1.*no result"):
        fit_map(jax.random.key(0), bad, prior, init, chunk_size=32)
    np.save(tmp_path / "a.npy", x[:10])
    np.save(tmp_path / "b.npy", np.full((3, 3), np.inf, x.dtype))
    with pytest.raises(ValueError, match=r"chunk 1 \(in b.npy\).*infinite"):
        fit_map(jax.random.key(0), tmp_path, prior, init)
    with pytest.raises(ValueError, match="chunk 1 of the data has 2 features"):
        fit_map(jax.random.key(0), [x[:5], x[5:9, :2]], prior, init)
    with pytest.raises(ValueError, match="holds no rows"):
        fit_map(jax.random.key(0), [x[:0], x[:0]], prior, init)
    with pytest.raises(TypeError, match="one-shot iterator"):
        fit_map(jax.random.key(0), iter(pieces), prior, init)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .npy files"):
        ChunkedSource(tmp_path / "empty")


def test_nan_on_a_later_pass_returns_nothing(x, pieces, start):
    # A source whose data change between passes: the error comes mid-fit, and no result.
    prior, init = start
    passes = []

    def chunks():
        passes.append(None)
        if len(passes) == 3:
            return iter([pieces[0], np.full((2, 3), np.nan)])
        return iter(pieces)

    with pytest.raises(ValueError, match="chunk 1 .*NaN"):
        fit_map(jax.random.key(0), chunks, prior, init, chunk_size=32)


def _resident_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED")
                    or not __import__("os").path.exists("/proc/self/status"),
                    reason="needs madvise and /proc (Linux)")
def test_streaming_a_memmap_keeps_resident_memory_to_a_chunk(tmp_path):
    """Reading a 64 MB memory-mapped file chunk by chunk must not leave its pages in the
    resident set (without releasing them, RSS grows by the size of the file)."""
    path = tmp_path / "big.npy"
    rows = 1_600_000
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, 10))
    out[:] = 1.0
    out.flush()
    del out
    source = ChunkedSource(np.load(path, mmap_mode="r"), chunk_size=16_384)
    before = _resident_kb()
    total = sum(float(chunk[:, 0].sum()) for chunk in source.chunks())
    grown_mb = (_resident_kb() - before) / 1024
    assert total == rows
    assert grown_mb < 16, f"resident memory grew by {grown_mb:.0f} MB reading a 64 MB file"
