"""The notebooks in notebooks/: each runs top to bottom, is committed with its outputs (so a
reader on a code host sees them), and names a config of configs/ that exists and loads.

Every ``*.ipynb`` found in notebooks/ gets these tests, so a new notebook is picked up
without editing this file.

Running a notebook starts a Jupyter kernel on this very interpreter (the ``python3``
kernel spec, whose ``python`` jupyter_client replaces by ``sys.executable``), in the
notebooks/ folder, with ``CI=true`` added to the kernel's environment whatever the
caller's: each notebook reads ``SMOKE = bool(os.environ.get("CI"))`` in its first code cell
and then samples at smoke sizes, so that ``make test`` stays fast on a laptop as on CI.
The committed file is only read; the executed copy goes to the test's temporary folder
(kept by pytest for the last runs, for a look after a failure). Their cost is JIT
compilation, so they run in the float32 pass only.
"""

import os
import re
import sys
from pathlib import Path

import pytest

from bayes_gmm.config import load_config

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell, at smoke sizes; a hung sampler fails, not blocks
MAX_BYTES = 3_000_000  # a committed notebook with its figures; more means oversized outputs
CONFIG_LINK = re.compile(r"configs/([A-Za-z0-9._-]+\.toml)")

pytestmark = [pytest.mark.notebook, pytest.mark.float32_pass]


def read(path):
    return nbformat.read(path, as_version=4)


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def errors(nb):
    return [f"cell {n}: {out.ename}: {out.evalue}"
            for n, cell in enumerate(code_cells(nb)) for out in cell.get("outputs", [])
            if out.output_type == "error"]


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb files"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_with_outputs(path):
    nb = read(path)
    cells = code_cells(nb)
    counts = [cell.execution_count for cell in cells]
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name}: execution counts {counts}; run it top to bottom in a fresh kernel "
        "and save it with its outputs"
    )
    assert not errors(nb), errors(nb)
    images = sum("image/png" in out.get("data", {}) for cell in cells for out in cell.outputs)
    assert images, f"{path.name} holds no figure"
    assert path.stat().st_size < MAX_BYTES, (
        f"{path.name} is {path.stat().st_size} bytes; lower the figures' dpi or print less"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_names_its_config(path):
    text = "\n".join(cell.source for cell in read(path).cells if cell.cell_type == "markdown")
    names = set(CONFIG_LINK.findall(text))
    assert names, f"{path.name} names no config (configs/<name>.toml) in its text"
    for name in sorted(names):
        assert (ROOT / "configs" / name).is_file(), f"{path.name} names configs/{name}"
        load_config(ROOT / "configs" / name)


def test_the_kernel_is_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec("python3").argv
    # jupyter_client starts "python" / "python3" kernel specs with sys.executable.
    assert argv[0] in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                       sys.executable), (
        f"the python3 kernel spec runs {argv[0]!r}, not this interpreter ({sys.executable}); "
        "remove that kernel spec or install ipykernel into this environment"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    committed = read(path)
    nb = read(path)
    env = {**os.environ, "CI": "true", "JAX_ENABLE_X64": "0"}
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute(env=env)
    finally:
        nbformat.write(nb, tmp_path / path.name)
    assert not errors(nb), errors(nb)
    # Every cell that gives output when run was committed with its output.
    for n, (ran, saved) in enumerate(zip(code_cells(nb), code_cells(committed), strict=True)):
        if ran.outputs:
            assert saved.outputs, f"{path.name}: code cell {n} was committed without output"
