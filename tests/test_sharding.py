"""Several devices: the sharded fit equals the one-device fit to rounding, on 4 simulated
CPU devices. XLA reads the device count when JAX starts, so the fits run in a fresh
interpreter (tests/_sharded_check.py), in float64 whatever the pass; it therefore runs
once, in the float64 pass."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COVARIANCE_TYPES, X64

pytestmark = pytest.mark.skipif(not X64, reason="the check runs in float64 whatever the "
                                "pass, so once: in the float64 pass")


@pytest.fixture(scope="module")
def sharded():
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    script = Path(__file__).with_name("_sharded_check.py")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_four_devices(sharded):
    assert sharded["devices"] == 4


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_em_sharded_equals_one_device(sharded, covariance_type):
    # 273 rows over 4 devices: the padding of the last one must add nothing.
    em = sharded["em"][covariance_type]
    assert em["iter"][0] == em["iter"][1] == 15
    assert em["gap"] < 1e-10
    one, many = em["lp"]
    assert abs(one - many) < 1e-10 * abs(one)


def test_streaming_sharded_equals_one_device(sharded):
    assert sharded["stream_gap"] < 1e-10


def test_gibbs_sharded_equals_one_device(sharded):
    # Same random numbers, laid out like the points: the same labels, hence the same
    # draws up to the order of the additions.
    assert sharded["gibbs_moved"] > 1e-3  # the chains moved: the comparison means something
    assert sharded["gibbs_gap"] < 1e-9


def test_nuts_one_chain_per_device_equals_vectorised(sharded):
    """4 chains on 4 devices: each device runs its own chain, the same as the chains run
    side by side on one device (the same trees; draws to rounding)."""
    assert sharded["nuts_devices"] == 4
    assert sharded["nuts_steps_equal"]
    assert sharded["nuts_gap"] < 1e-9
