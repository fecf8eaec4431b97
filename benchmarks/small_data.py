"""Small data (issue 10): cold, warm-cache and warm times, beside scikit-learn and mclust.

Two data sets, loaded by :mod:`bayes_gmm.datasets`: Old Faithful (272 x 2) and the galaxy
velocities (82 x 1, in 1000 km/s). For each, the steps a researcher takes first:

- ``import``: ``import bayes_gmm`` (the first statement of a fresh process);
- ``fit``: ``BayesianGMM(n_components=2, random_state=0).fit(x)``;
- ``grid``: the 36-model search, ``select_k(x, ks=range(1, 10), covariance_type=["full",
  "diag", "spherical", "tied"], criteria=["bic", "icl"], n_init=3, random_state=0)``. Where
  ``select_k`` does not take a list of covariance types yet, the same grid runs as a loop
  of four calls with one string each; the ``detail`` column says which form ran
  (``form=list`` or ``form=loop``);
- ``gibbs``, ``nuts``, ``laplace``: ``gmm.sample_posterior(x, method=...)`` on the fit
  above, 2 chains, 200 warm-up and 200 kept draws (``--chains``, ``--warmup``,
  ``--samples``; ``laplace`` draws 2 x 200 and has no warm-up);
- ``sweep``: ``prior_sweep(x, default_prior(x, 2), {"mean_precision_prior": 64 values
  geometric in 1e-3 .. 10})``.

Three regimes, each a fresh child process (this script re-invoked with ``--child``; it
prints one JSON line that the parent collects):

- ``cold``: ``BAYES_GMM_CACHE_DIR`` set to a new, empty temporary directory (the
  directory of JAX's persistent compilation cache), so everything compiles;
- ``warm-cache``: a fresh process with the same directory, filled by the cold run;
- ``warm``: a fresh process with the same directory; every step runs twice and the second
  call is timed (there is no "second import": a second ``import`` is a dictionary lookup).

"Cold" means an empty JAX cache only: Python's bytecode and the operating system's file
cache are warm after the first process, as they are for a user's second session.

The grid runs in a process of its own (import, then the grid: the targets are about the
grid right after import, without a fit compiled before it); ``fit``, the samplers and the
sweep share another (the samplers need the fit), in that order, so a later step may reuse
what an earlier one compiled, as it would for a user. Each (data set, process) has its own
cache directory. ``programs`` counts the XLA programs a step asked for (compiled or read
from the persistent cache), ``cache hits`` those read from the cache, ``compile s`` the
time JAX spent tracing, lowering and compiling or reading them (its monitoring events);
the directory's size after the cold run is in the ``cache`` row.

Beside them, as references:

- scikit-learn, in one fresh process: ``import sklearn.mixture``; after one warm-up fit,
  ``GaussianMixture(n_components=2, random_state=0).fit(x)`` and the 36 fits
  ``GaussianMixture(n_components=k, covariance_type=t, n_init=3, random_state=0)`` for k
  in 1..9 and the four types, each timed with its default BLAS threads and with one
  thread, the faster kept (both are in the ``detail`` column: on a shared machine
  OpenBLAS's busy-waiting threads can make it several times slower);
- R's mclust, where ``Rscript`` with mclust is installed (Debian: ``r-base-core
  r-cran-mclust``): ``library(mclust)``, then ``Mclust(d, G = 1:9, prior =
  priorControl())`` twice in one Rscript on the same numbers (timed inside R with
  ``system.time``), and the whole Rscript's wall time. mclust picks its own covariance
  models (10 of its 14 take a prior in 2-D, 2 in 1-D) and starts each from one
  hierarchical clustering, without restarts. Its ``import`` is ``library(mclust)`` inside
  R; R's own start is in the whole Rscript's time, shown beside it. Without Rscript (or
  without mclust in it) the rows say so; ``--no-r`` leaves R out.

Reported, not asserted. The issue's targets are marked met / not met: warm grid faster
than mclust (the faster of its two calls); warm-cache grid under 1.5 s after import; cold
grid under 15 s; import under 1 s (cold and warm-cache). Rows go to
``benchmarks/results/small_data.csv`` (one per data set x regime x step, with the date,
the machine, the versions, the settings and the load average around each process); the
markdown table is printed and written to ``benchmarks/results/small_data.md``
(``small_data_quick.md`` for ``--quick``).

Run from the repository root::

    python benchmarks/small_data.py            # both data sets, every step
    python benchmarks/small_data.py --quick    # Old Faithful; fit, grid (K = 1..3, full
                                               # and spherical), an 8-point sweep: ~1 min
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS_DIR, append_csv, load, machine, versions

HERE = Path(__file__).resolve()
RESULTS = RESULTS_DIR / "small_data.csv"
DATASETS = ("old_faithful", "galaxy_velocities")
LABELS = {"old_faithful": "Old Faithful (272 x 2)",
          "galaxy_velocities": "galaxy velocities / 1000 (82 x 1)"}
REGIMES = ("cold", "warm-cache", "warm")
COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
CRITERIA = ("bic", "icl")
METHODS = ("gibbs", "nuts", "laplace")
STEPS = ("fit", "grid", *METHODS, "sweep")
# The grid alone in one process; the fit, the samplers (which need it) and the sweep in
# another.
GROUPS = (("grid",), ("fit", *METHODS, "sweep"))
PACKAGES = ("bayes_gmm", "jax", "jaxlib", "numpyro", "scikit-learn", "numpy")
HEAVY = ("numpyro", "arviz", "xarray", "matplotlib")
JSON_MARK = "SMALL_DATA_JSON "
COMPILE_EVENTS = frozenset({
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
})
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
CACHE_HIT = "/jax/compilation_cache/cache_hits"
TARGETS = {"import_s": 1.0, "cold_grid_s": 15.0, "warm_cache_grid_s": 1.5}
CHILD_TIMEOUT_S = 3600

R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
gmax <- as.integer(args[2])
lib <- system.time(suppressPackageStartupMessages(library(mclust)))[["elapsed"]]
d <- read.csv(args[1])
if (ncol(d) == 1) d <- d[[1]]
first <- system.time(m <- Mclust(d, G = 1:gmax, prior = priorControl(),
                                 verbose = FALSE))[["elapsed"]]
second <- system.time(Mclust(d, G = 1:gmax, prior = priorControl(),
                             verbose = FALSE))[["elapsed"]]
cat(sprintf(paste0('{"library_s": %.6f, "first_s": %.6f, "second_s": %.6f, ',
                   '"models": %d, "fits": %d, "best": "%s, G = %d", "r": "%s.%s", ',
                   '"mclust": "%s"}\n'),
            lib, first, second, sum(colSums(!is.na(m$BIC)) > 0), sum(!is.na(m$BIC)),
            m$modelName, m$G, R.version$major, R.version$minor,
            as.character(packageVersion("mclust"))))
"""


# ------------------------------------------------------------------------------------
# Settings


def settings_from(args):
    quick = args.quick
    return {
        "mode": "quick" if quick else "partial" if args.datasets or args.steps else "full",
        "datasets": args.datasets or (DATASETS[:1] if quick else DATASETS),
        "steps": args.steps or (("fit", "grid", "sweep") if quick else STEPS),
        "ks": list(range(1, 4 if quick else 10)),
        "covariance_types": list(("full", "spherical") if quick else COVARIANCE_TYPES),
        "criteria": list(CRITERIA),
        "n_init": 3,
        "num_chains": args.chains,
        "num_warmup": args.warmup,
        "num_samples": args.samples,
        "sweep_points": args.sweep_points or (8 if quick else 64),
        "sweep_range": [1e-3, 10.0],
        "x64": args.x64,
    }


def load_data(name):
    """The data set as a float64 NumPy array (galaxy velocities in 1000 km/s)."""
    from bayes_gmm import datasets

    frame = (datasets.old_faithful() if name == "old_faithful"
             else datasets.galaxy_velocities(thousands=True))
    return frame.to_numpy("float64")


# ------------------------------------------------------------------------------------
# Children: each prints one JSON line


class CompileMonitor:
    """XLA programs asked for, persistent-cache hits and compile time (JAX's events)."""

    def __init__(self):
        import jax.monitoring

        self.spans, self.programs, self.hits = [], 0, 0
        jax.monitoring.register_event_time_span_listener(self._span)
        jax.monitoring.register_event_listener(self._event)

    def _span(self, event, start, end, **kwargs):
        if event in COMPILE_EVENTS:
            self.spans.append((start, end))
        if event == BACKEND_COMPILE:
            self.programs += 1

    def _event(self, event, **kwargs):
        if event == CACHE_HIT:
            self.hits += 1

    def mark(self):
        return time.time(), self.programs, self.hits, len(self.spans)

    def since(self, mark):
        """(programs, cache hits, compile seconds) since ``mark``: spans merged."""
        start, programs, hits, first = mark
        total, reach = 0.0, start
        for begin, end in sorted(self.spans[first:]):
            begin = max(begin, reach)
            if end > begin:
                total += end - begin
                reach = end
        return self.programs - programs, self.hits - hits, total


def _grid(x, settings):
    """The grid; returns (seconds, detail). The list form when select_k takes it."""
    from bayes_gmm import select_k

    kwargs = {"ks": settings["ks"], "criteria": settings["criteria"],
              "n_init": settings["n_init"], "random_state": 0}
    start = time.perf_counter()
    try:
        table = select_k(x, covariance_type=list(settings["covariance_types"]), **kwargs)
        seconds = time.perf_counter() - start
        best = table.attrs.get("best")
        return seconds, f"form=list; {len(table)} rows; best {best}"
    except (TypeError, ValueError) as err:
        if "covariance_type" not in str(err):
            raise
    start = time.perf_counter()  # the refused call (validation only) is not counted
    tables = {t: select_k(x, covariance_type=t, **kwargs)
              for t in settings["covariance_types"]}
    seconds = time.perf_counter() - start
    bic = min((float(table["bic"].min()), t, int(table["bic"].idxmin()))
              for t, table in tables.items())
    rows = sum(len(table) for table in tables.values())
    return seconds, f"form=loop; {rows} rows; best bic {bic[1]}, K = {bic[2]}"


def _step(name, x, state, settings):
    """Run one step; returns (seconds, detail)."""
    import numpy as np

    import bayes_gmm

    if name == "grid":
        return _grid(x, settings)
    start = time.perf_counter()
    if name == "fit":
        gmm = bayes_gmm.BayesianGMM(n_components=2, random_state=0).fit(x)
        seconds = time.perf_counter() - start
        state["gmm"] = gmm
        return seconds, f"{gmm.n_iter_} EM iterations; dtype {gmm.means_.dtype}"
    if name in METHODS:
        if "gmm" not in state:
            return None, "skipped: needs the fit"
        tree = state["gmm"].sample_posterior(
            x, method=name, num_chains=settings["num_chains"],
            num_warmup=settings["num_warmup"], num_samples=settings["num_samples"])
        seconds = time.perf_counter() - start
        draws = tree.posterior.sizes
        return seconds, f"{draws.get('chain')} chains x {draws.get('draw')} draws"
    if name == "sweep":
        low, high = settings["sweep_range"]
        values = np.geomspace(low, high, settings["sweep_points"])
        result = bayes_gmm.prior_sweep(x, bayes_gmm.default_prior(x, 2),
                                       {"mean_precision_prior": values})
        seconds = time.perf_counter() - start
        return seconds, (f"{values.size} values of mean_precision_prior, K = 2, full; "
                         f"{result.sizes.get('mean_precision_prior')} fits")
    raise ValueError(f"unknown step {name!r}")


def child_bayes_gmm(spec):
    load_before = load()
    start = time.perf_counter()
    import bayes_gmm  # noqa: F401  (the timed import)

    import_s = time.perf_counter() - start
    heavy = [m for m in HEAVY if m in sys.modules]
    import jax

    monitor = CompileMonitor()
    settings, regime = spec["settings"], spec["regime"]
    x = load_data(spec["dataset"])
    cache_dir = jax.config.jax_compilation_cache_dir
    if cache_dir and cache_dir == os.environ.get("BAYES_GMM_CACHE_DIR"):
        cache = "JAX's cache dir = BAYES_GMM_CACHE_DIR"
    else:
        cache = f"JAX's cache dir {cache_dir!r}, not BAYES_GMM_CACHE_DIR"
    loaded = ", ".join(heavy) or "none of " + "/".join(HEAVY)
    rows = [{"step": "import", "seconds": None if regime == "warm" else import_s,
             "detail": "n/a: a second import is a lookup in sys.modules" if regime == "warm"
             else f"loaded at import: {loaded}; {cache}"}]
    state = {}
    for name in spec["steps"]:
        row = {"step": name}
        try:
            if regime == "warm":
                _step(name, x, state, settings)
            mark = monitor.mark()
            row["seconds"], row["detail"] = _step(name, x, state, settings)
            row["programs"], row["cache_hits"], row["compile_s"] = monitor.since(mark)
        except Exception as err:  # noqa: BLE001 (reported in the row, the others go on)
            row["seconds"], row["detail"] = None, f"failed: {type(err).__name__}: {err}"[:300]
        rows.append(row)
    return {"rows": rows, "load_before": load_before, "load_after": load(),
            "cache_dir": cache_dir, "x64": bool(jax.config.jax_enable_x64),
            "backend": jax.default_backend()}


def child_sklearn(spec):
    load_before = load()
    start = time.perf_counter()
    import sklearn.mixture

    import_s = time.perf_counter() - start
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore")  # ConvergenceWarning on the largest K
    settings = spec["settings"]
    rows = [{"step": "import", "seconds": import_s, "detail": "import sklearn.mixture"}]
    from threadpoolctl import threadpool_limits

    def grid(x):
        best = None
        for t in settings["covariance_types"]:
            for k in settings["ks"]:
                model = sklearn.mixture.GaussianMixture(
                    n_components=k, covariance_type=t, n_init=settings["n_init"],
                    random_state=0).fit(x)
                best = min(best or (np.inf,), (model.bic(x), t, k))
        return best

    def fit(x):
        sklearn.mixture.GaussianMixture(n_components=2, random_state=0).fit(x)

    def best_of_threads(fn, x):
        """(seconds, threads): the faster of the default BLAS threads and one thread."""
        times = {}
        for threads in ("default", 1):
            with threadpool_limits(None if threads == "default" else 1):
                start = time.perf_counter()
                out = fn(x)
                times[threads] = time.perf_counter() - start
        fastest = min(times, key=times.get)
        return times[fastest], (f"default BLAS threads {times['default']:.3g} s, one thread "
                                f"{times[1]:.3g} s"), out

    for name, path in spec["data"].items():
        x = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        fit(x)  # warm-up
        seconds, threads, _ = best_of_threads(fit, x)
        rows.append({"dataset": name, "step": "fit", "seconds": seconds,
                     "detail": "GaussianMixture(n_components=2, random_state=0), after a "
                               f"warm-up fit; {threads}"})
        seconds, threads, best = best_of_threads(grid, x)
        rows.append({"dataset": name, "step": "grid", "seconds": seconds,
                     "detail": f"{len(settings['covariance_types']) * len(settings['ks'])} "
                               f"fits, n_init={settings['n_init']}; best bic {best[1]}, "
                               f"K = {best[2]}; {threads}"})
    return {"rows": rows, "load_before": load_before, "load_after": load()}


def child(spec):
    if spec.get("x64"):
        os.environ["JAX_ENABLE_X64"] = "1"
    out = child_sklearn(spec) if spec["kind"] == "sklearn" else child_bayes_gmm(spec)
    print(JSON_MARK + json.dumps(out, default=str), flush=True)


# ------------------------------------------------------------------------------------
# The parent


def run_child(spec, env=None):
    """Run this script as a child; its JSON, or {"error": ...}."""
    cmd = [sys.executable, str(HERE), "--child", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT_S} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(JSON_MARK):
            return json.loads(line[len(JSON_MARK):])
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    return {"error": f"exit {done.returncode}: {' | '.join(tail)}"[:400]}


def directory_size(path):
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def run_ours(settings, data_files):
    rows, facts = [], {}
    cache_root = Path(tempfile.mkdtemp(prefix="small_data_cache_"))
    try:
        for dataset in settings["datasets"]:
            for group in GROUPS:
                steps = [s for s in group if s in settings["steps"]]
                if not steps:
                    continue
                cache = cache_root / f"{dataset}_{steps[0]}"
                cache.mkdir()
                env = {**os.environ, "BAYES_GMM_CACHE_DIR": str(cache)}
                if settings["x64"]:
                    env["JAX_ENABLE_X64"] = "1"
                for regime in REGIMES:
                    spec = {"kind": "bayes_gmm", "regime": regime, "dataset": dataset,
                            "steps": steps, "settings": settings}
                    started = time.perf_counter()
                    out = run_child(spec, env)
                    wall = time.perf_counter() - started
                    print(f"  {dataset:17s} {regime:10s} {'+'.join(steps):28s} "
                          f"{wall:6.1f} s  {out.get('error', '')}", flush=True)
                    if "error" in out:
                        rows += [{"dataset": dataset, "regime": regime, "step": s,
                                  "library": "bayes_gmm", "detail": f"failed: {out['error']}"}
                                 for s in (["import"] if steps[0] == "grid" else []) + steps]
                        continue
                    facts.update({k: out[k] for k in ("x64", "backend")})
                    for row in out["rows"]:
                        if row["step"] == "import" and steps[0] != "grid" \
                                and "grid" in settings["steps"]:
                            continue  # the import row comes from the grid's process
                        rows.append({"dataset": dataset, "regime": regime,
                                     "library": "bayes_gmm", **row,
                                     "load_before": out["load_before"],
                                     "load_after": out["load_after"]})
                    if regime == "cold":
                        n, size = directory_size(cache)
                        rows.append({"dataset": dataset, "regime": regime, "step": "cache",
                                     "library": "bayes_gmm",
                                     "detail": f"after the cold {'+'.join(steps)}: {n} files, "
                                               f"{size / 1e6:.1f} MB in the cache directory "
                                               f"(JAX's: {out['cache_dir']})"})
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    return rows, facts


def run_sklearn(settings, data_files):
    out = run_child({"kind": "sklearn", "settings": settings, "data": data_files})
    print(f"  scikit-learn {out.get('error', 'done')}", flush=True)
    if "error" in out:
        return [{"dataset": d, "regime": "warm", "step": "grid", "library": "sklearn",
                 "detail": f"failed: {out['error']}"} for d in data_files]
    rows = []
    for row in out["rows"]:
        datasets = [row.pop("dataset")] if "dataset" in row else list(data_files)
        for d in datasets:  # the import is the same for every data set
            rows.append({"dataset": d, "regime": "cold" if row["step"] == "import" else "warm",
                         "library": "sklearn", **row, "load_before": out["load_before"],
                         "load_after": out["load_after"]})
    return rows


def run_mclust(settings, data_files):
    rows, facts = [], {"r": "absent", "mclust": "absent"}
    rscript = shutil.which("Rscript")
    note = None
    if rscript is None:
        note = "skipped: Rscript not found (Debian: apt-get install r-base-core r-cran-mclust)"
    else:
        check = subprocess.run([rscript, "-e", "cat(requireNamespace('mclust', quietly=TRUE))"],
                               capture_output=True, text=True)
        if check.stdout.strip() != "TRUE":
            note = "skipped: R has no mclust (Debian: apt-get install r-cran-mclust)"
    if note:
        print(f"  mclust {note}")
        return [{"dataset": d, "regime": "cold", "step": "grid", "library": "mclust",
                 "detail": note} for d in data_files], facts
    gmax = max(settings["ks"])
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as f:
        f.write(R_SCRIPT)
    try:
        for dataset, path in data_files.items():
            load_before = load()
            started = time.perf_counter()
            done = subprocess.run([rscript, f.name, path, str(gmax)], capture_output=True,
                                  text=True, timeout=CHILD_TIMEOUT_S)
            wall = time.perf_counter() - started
            stamp = {"dataset": dataset, "library": "mclust", "load_before": load_before,
                     "load_after": load()}
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                error = " | ".join(done.stderr.strip().splitlines()[-3:])
                rows.append({**stamp, "regime": "cold", "step": "grid",
                             "detail": f"failed: exit {done.returncode}: {error}"[:400]})
                continue
            out = json.loads(lines[-1])
            facts.update(r=out["r"], mclust=out["mclust"])
            grid = (f"Mclust(d, G = 1:{gmax}, prior = priorControl()): {out['models']} "
                    f"models, {out['fits']} fits; best {out['best']}")
            rows += [
                {**stamp, "regime": "cold", "step": "import", "seconds": out["library_s"],
                 "detail": "library(mclust), inside R"},
                {**stamp, "regime": "cold", "step": "grid", "seconds": out["first_s"],
                 "detail": f"first call in the Rscript, system.time; {grid}"},
                {**stamp, "regime": "warm", "step": "grid", "seconds": out["second_s"],
                 "detail": "second call in the same Rscript, system.time"},
                {**stamp, "regime": "cold", "step": "rscript", "seconds": wall,
                 "detail": "the whole Rscript (start, library, read, both calls), wall"},
            ]
            print(f"  mclust {dataset:17s} {out['first_s']:.3f} s, "
                  f"{out['second_s']:.3f} s; Rscript {wall:.1f} s", flush=True)
    finally:
        os.unlink(f.name)
    return rows, facts


# ------------------------------------------------------------------------------------
# The table


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _s(value):
    value = _float(value)
    if value is None:
        return "n/a"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def _ratio(a, b):
    a, b = _float(a), _float(b)
    return "n/a" if a is None or not b else f"{a / b:.2g}x" if a / b < 10 else f"{a / b:.0f}x"


def markdown(rows, meta):
    """The markdown report of ``rows`` (dicts; values numbers or strings, as in the CSV)."""
    def get(dataset, library, regime, step, key="seconds"):
        for r in rows:
            if (r["dataset"], r["library"], r["regime"], r["step"]) == \
                    (dataset, library, regime, step):
                return r.get(key)
        return None

    def detail(dataset, library, regime, step):
        return str(get(dataset, library, regime, step, "detail") or "")

    def met(ok):
        return "n/a" if ok is None else "**met**" if ok else "**not met**"

    lines = [f"# Small data, {meta['date'][:10]} ({meta['mode']})", "",
             f"Machine: {meta['machine']}; {meta['versions']}; R {meta['r']}, mclust "
             f"{meta['mclust']}; JAX backend {meta.get('backend', '?')}, "
             f"x64 {meta.get('x64', '?')}. Grid: K = {meta['ks']}, covariance types "
             f"{meta['covariance_types']}, criteria {meta['criteria']}, n_init "
             f"{meta['n_init']}. Samplers: {meta['num_chains']} chains, {meta['num_warmup']} "
             f"warm-up, {meta['num_samples']} draws. Sweep: {meta['sweep_points']} values. "
             "Seconds; `cold`: fresh process, empty compilation cache; `warm-cache`: fresh "
             "process, cache filled by the cold run; `warm`: second call in one process. "
             "Programs: XLA programs compiled, + those read from the persistent cache, and the "
             "seconds JAX spent tracing, lowering and compiling or reading them. "
             f"Load average around the processes: {meta['load']}.", ""]
    targets = []
    for dataset in meta["datasets"]:
        steps = [s for s in ("import", *STEPS) if any(
            r["dataset"] == dataset and r["step"] == s and r["library"] == "bayes_gmm"
            for r in rows)]
        lines += [f"## {LABELS[dataset]}", "",
                  "| step | cold | warm-cache | warm | scikit-learn | mclust | programs "
                  "compiled + cached, compile s: cold / warm-cache / warm |",
                  "|---|---|---|---|---|---|---|"]
        for step in steps:
            compiles = []
            for regime in REGIMES:
                programs = _float(get(dataset, "bayes_gmm", regime, step, "programs"))
                hits = _float(get(dataset, "bayes_gmm", regime, step, "cache_hits")) or 0
                spent = _float(get(dataset, "bayes_gmm", regime, step, "compile_s"))
                compiles.append("-" if programs is None else f"{programs - hits:.0f}"
                                + (f" + {hits:.0f} cached" if hits else "")
                                + (f", {spent:.2g} s" if spent else ""))
            theirs = {"sklearn": _s(get(dataset, "sklearn", "warm", step)),
                      "mclust": _s(get(dataset, "mclust", "warm", step))}
            if step == "import":
                theirs = {lib: _s(get(dataset, lib, "cold", step)) for lib in theirs}
                rscript = get(dataset, "mclust", "cold", "rscript")
                if _float(rscript) is not None:
                    theirs["mclust"] += f" (Rscript: {_s(rscript)})"
            elif step == "grid":
                theirs["mclust"] = (f"{_s(get(dataset, 'mclust', 'cold', step))} / "
                                    f"{theirs['mclust']}")
            label = {"grid": f"grid ({detail(dataset, 'bayes_gmm', 'cold', 'grid').split(';')[0]})",
                     "sweep": f"sweep ({meta['sweep_points']} points)"}.get(step, step)
            lines.append(f"| {label} | " + " | ".join(
                _s(get(dataset, "bayes_gmm", regime, step)) for regime in REGIMES)
                + f" | {theirs['sklearn']} | {theirs['mclust']} | {' / '.join(compiles)} |")
        lines.append("")
        mclust_grid = [_float(get(dataset, "mclust", r, "grid")) for r in ("cold", "warm")]
        mclust_best = min((v for v in mclust_grid if v is not None), default=None)
        ratio_rows = []
        for step in ("import", "fit", "grid"):
            if step not in steps:
                continue
            sk = get(dataset, "sklearn", "cold" if step == "import" else "warm", step)
            mc = mclust_best if step == "grid" else get(dataset, "mclust", "cold", step) \
                if step == "import" else None
            for regime in REGIMES:
                ours = get(dataset, "bayes_gmm", regime, step)
                if _float(ours) is not None:
                    ratio_rows.append(f"| {step} | {regime} | {_ratio(ours, sk)} | "
                                      f"{_ratio(ours, mc)} |")
        if ratio_rows:
            lines += ["bayes_gmm's time over theirs (above 1: slower; mclust's grid: the "
                      "faster of its two calls):", "",
                      "| step | regime | / scikit-learn | / mclust |", "|---|---|---|---|",
                      *ratio_rows, ""]
        notes = [detail(dataset, "bayes_gmm", r, s) for r in REGIMES for s in steps
                 if detail(dataset, "bayes_gmm", r, s).startswith(("failed", "skipped"))]
        notes += [f"cache: {detail(dataset, 'bayes_gmm', 'cold', 'cache')}"] \
            if detail(dataset, "bayes_gmm", "cold", "cache") else []
        for lib in ("sklearn", "mclust"):
            for regime in ("cold", "warm"):
                text = detail(dataset, lib, regime, "grid")
                if text and not text.startswith("second"):
                    notes.append(f"{lib} grid: {text}")
        if detail(dataset, "bayes_gmm", "cold", "grid"):
            notes.append(f"bayes_gmm grid: {detail(dataset, 'bayes_gmm', 'cold', 'grid')}")
        if _float(get(dataset, "mclust", "cold", "rscript")) is not None:
            notes.append(f"mclust: the whole Rscript (R's start, library, both calls) took "
                         f"{_s(get(dataset, 'mclust', 'cold', 'rscript'))} s")
        loads = [_float(r.get("load_before")) for r in rows if r["dataset"] == dataset]
        loads += [_float(r.get("load_after")) for r in rows if r["dataset"] == dataset]
        loads = [v for v in loads if v is not None]
        if loads:
            notes.append(f"load average around the processes: {min(loads):.1f} to "
                         f"{max(loads):.1f}")
        lines += [f"- {n}" for n in notes] + [""]

        imports = [_float(get(dataset, "bayes_gmm", r, "import")) for r in REGIMES[:2]]
        imports = [v for v in imports if v is not None]
        cold, cache, warm = (_float(get(dataset, "bayes_gmm", r, "grid")) for r in REGIMES)
        targets += [
            ("import under 1 s (cold, warm-cache)", dataset,
             " / ".join(_s(v) for v in imports) or "n/a",
             None if not imports else max(imports) < TARGETS["import_s"]),
            ("cold grid under 15 s", dataset, _s(cold),
             None if cold is None else cold < TARGETS["cold_grid_s"]),
            ("warm-cache grid under 1.5 s after import", dataset, _s(cache),
             None if cache is None else cache < TARGETS["warm_cache_grid_s"]),
            ("warm grid faster than mclust", dataset,
             f"{_s(warm)} against {_s(mclust_best)}",
             None if warm is None or mclust_best is None else warm < mclust_best),
        ]
    lines += ["## Targets of issue 10 (reported, not asserted)", "",
              "| target | data | seconds | |", "|---|---|---|---|"]
    lines += [f"| {t} | {d} | {v} | {met(ok)} |" for t, d, v, ok in targets]
    if meta["mode"] != "full":
        lines += ["", f"A {meta['mode']} run: the targets refer to the full run (36 models, "
                  "both data sets) and are shown here for the form only."]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Old Faithful; fit, grid (K = 1..3, full and spherical), an "
                             "8-point sweep; no samplers (about a minute)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS)
    parser.add_argument("--steps", nargs="+", choices=STEPS)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--sweep-points", type=int)
    parser.add_argument("--x64", action="store_true", help="JAX_ENABLE_X64=1 in the children")
    parser.add_argument("--no-r", action="store_true", help="skip mclust")
    parser.add_argument("--no-csv", action="store_true", help="print only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    settings = settings_from(args)
    since = datetime.datetime.now().isoformat(timespec="seconds")
    load_start = load()
    print(f"{machine()}; load average {load_start:.2f}; {settings['mode']} run: "
          f"{', '.join(settings['datasets'])}; steps {' '.join(settings['steps'])}", flush=True)
    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="small_data_"))
    try:
        import numpy as np

        data_files = {}
        for name in settings["datasets"]:  # the same numbers for scikit-learn and R
            x, path = load_data(name), data_dir / f"{name}.csv"
            np.savetxt(path, x, delimiter=",", fmt="%.17g", comments="",
                       header=",".join(f"x{i}" for i in range(x.shape[1])))
            data_files[name] = str(path)
        rows, facts = run_ours(settings, data_files)
        rows += run_sklearn(settings, data_files)
        if args.no_r:
            r_rows, r_facts = [], {"r": "not run", "mclust": "not run"}
        else:
            r_rows, r_facts = run_mclust(settings, data_files)
        rows += r_rows
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    facts.update(r_facts)
    pkg = versions(*PACKAGES)
    extra = {**pkg, "r": facts["r"], "mclust": facts["mclust"],
             "backend": facts.get("backend", "?"), "x64": facts.get("x64", settings["x64"]),
             "mode": settings["mode"], "ks": f"{settings['ks'][0]}-{settings['ks'][-1]}",
             "covariance_types": " ".join(settings["covariance_types"]),
             "n_init": settings["n_init"], "num_chains": settings["num_chains"],
             "num_warmup": settings["num_warmup"], "num_samples": settings["num_samples"],
             "sweep_points": settings["sweep_points"]}
    fields = ("dataset", "regime", "step", "library", "seconds", "programs", "cache_hits",
              "compile_s", "detail", "load_before", "load_after")
    rows = [{f: row.get(f) for f in fields} for row in rows]
    meta = {**extra, "date": since, "machine": machine(),
            "datasets": settings["datasets"], "criteria": " ".join(settings["criteria"]),
            "versions": ", ".join(f"{k} {v}" for k, v in pkg.items()),
            "load": f"{load_start:.2f} at the start, {load():.2f} at the end"}
    text = markdown(rows, meta)
    print("\n" + text)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if not args.no_csv:
        path = append_csv(rows, RESULTS, **extra)
        md = RESULTS_DIR / ("small_data_quick.md" if args.quick else "small_data.md")
        md.write_text(text + "\n")
        print(f"appended to {path}; table written to {md}")


if __name__ == "__main__":
    main()
