"""What every benchmark script shares: the clock, the machine stamp, the CSV and the table.

Each script in ``benchmarks/`` measures one thing and appends rows to its own CSV under
``benchmarks/results/``; every row carries the date, the machine (OS, CPU model, CPU
count), the versions that matter and the load average of the machine around the
measurement (on a shared machine the load says how far a time can be trusted). The
scripts import this module as ``_common`` (they run as ``python benchmarks/x.py``, which
puts ``benchmarks/`` first on the path).
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import resource
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# BENCH_RESULTS_DIR redirects every script's output (run_all.py --quick uses a temporary
# directory, so that smoke runs never mix with real results).
RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR")
                   or Path(__file__).resolve().parent / "results")


def timed(fn):
    """Wall-clock seconds of ``fn()``, its (JAX) result waited for."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def load():
    """The one-minute load average (two cores: above 2 means the timings are stretched)."""
    return os.getloadavg()[0]


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cpu = cpu or "unknown CPU"
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs"


def versions(*packages):
    """``{package: version}``, "absent" for what is not installed."""
    out = {}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def peak_rss_mb():
    """This process's peak resident set size so far, in MB (Linux: VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _format(value):
    return f"{value:.4g}" if isinstance(value, float) else value


def append_csv(rows, path, **extra):
    """Append ``rows`` (dicts with the same keys) to ``path`` after a stamp of the date,
    the machine and ``extra`` (e.g. versions). A file whose header differs is not mixed
    with: the rows go to ``<stem>_<date>.csv`` beside it instead."""
    if not rows:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
             "machine": machine(), **extra}
    fields = list(stamp) + list(rows[0])
    if path.exists():
        with path.open() as f:
            header = next(csv.reader(f), None)
        if header != fields:
            path = path.with_name(f"{path.stem}_{stamp['date'][:10]}{path.suffix}")
    new_file = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new_file:
            writer.writeheader()
        for row in rows:
            writer.writerow({**stamp, **{k: _format(v) for k, v in row.items()}})
    return path


def print_table(rows, columns, header=True):
    """``columns``: (key, title, format) triples; a value that is a string (``n/a``,
    ``skipped``) is printed as it is."""
    def cell(row, key, fmt):
        value = row.get(key, "")
        return value if isinstance(value, str) else fmt.format(value)

    cells = [[cell(row, key, fmt) for key, _, fmt in columns] for row in rows]
    widths = [max(len(title), *(len(c[i]) for c in cells)) if cells else len(title)
              for i, (_, title, _) in enumerate(columns)]
    if header:
        print("  ".join(title.rjust(w) for (_, title, _), w in zip(columns, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))


def loglog_slope(x, y):
    """Least-squares slope of log y on log x."""
    import numpy as np

    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0])
