"""Several devices: the sharded fit equals the one-device fit to rounding, on 4 simulated
CPU devices. XLA reads the device count when JAX starts, so the fits run in a fresh
interpreter (tests/_sharded_check.py), in float64 whatever the pass."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def sharded():
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    script = Path(__file__).with_name("_sharded_check.py")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_four_devices(sharded):
    assert sharded["devices"] == 4


def test_em_sharded_equals_one_device(sharded):
    # 273 rows over 4 devices: the padding of the last one must add nothing.
    assert sharded["em_iter"][0] == sharded["em_iter"][1]
    assert sharded["em_gap"] < 1e-10
    one, many = sharded["em_lp"]
    assert abs(one - many) < 1e-10 * abs(one)


def test_streaming_sharded_equals_one_device(sharded):
    assert sharded["stream_gap"] < 1e-10


def test_gibbs_passes_sharded_equal_one_device(sharded):
    # Same labels (the same random numbers), hence the same counts and statistics.
    assert sharded["gibbs_counts"][0] == sharded["gibbs_counts"][1]
    assert sharded["gibbs_stats_gap"] < 1e-10
    assert sharded["gibbs_loglik_gap"] < 1e-9
