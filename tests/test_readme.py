"""The README's examples run as written (so the README stays true as the code changes)."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.float32_pass

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python examples"
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert namespace["gmm"].converged_
    assert bool(namespace["info"].converged)
