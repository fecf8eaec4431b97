"""Several devices: the rows of the data split over a 1-D device mesh.

Every pass over the data (the E-step fused with the sufficient statistics in
:mod:`bayes_gmm.em`, the label draws and statistics of :mod:`bayes_gmm.gibbs`) is a sum
over points. With a mesh, the points are laid out device-major, ``(n_devices, n_chunks,
W, C)``: device d holds a contiguous block of rows, cut into feature-major chunks of C
rows, and the padding that makes the blocks equal sits at the end with a zero row mask,
so it adds nothing to any sum. Each device scans its own chunks under ``jax.shard_map``
and the per-device sums are added by one ``psum``: the only traffic of an EM step is the
(K, D, D + 1) statistics, not the data. The parameters, the M-step and the draws of theta
are replicated, computed identically on every device. The result equals the one-device
fit to rounding: only the order of the additions differs.

Multi-host runs use JAX's own runtime. Start one process per host with the same script,
call ``jax.distributed.initialize()`` first (on Slurm or Cloud TPU it reads everything
from the environment; elsewhere pass ``coordinator_address="host0:1234",
num_processes=P, process_id=i``), after which ``jax.devices()`` lists the devices of every
host and ``mesh="auto"`` spans them all. Every process then calls the fit with the same
arguments; to load only its own rows, a process builds the global array with
``jax.make_array_from_process_local_data(NamedSharding(row_mesh(), P("rows")), rows)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "rows"


def row_mesh(devices=None) -> Mesh | None:
    """A 1-D mesh named ``"rows"`` over ``devices`` (default ``jax.devices()``), or None
    when there is only one device (nothing to split)."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) < 2:
        return None
    return Mesh(np.asarray(devices), (AXIS,))


def resolve_mesh(mesh) -> Mesh | None:
    """The mesh a fit runs on: ``"auto"`` -> :func:`row_mesh`, None -> None, a 1-D Mesh
    -> itself (a one-device mesh -> None)."""
    if isinstance(mesh, str) and mesh == "auto":
        return row_mesh()
    if mesh is None:
        return None
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
        raise ValueError(
            "mesh must be 'auto', None or a 1-D jax.sharding.Mesh (one axis, over which "
            f"the rows are split); got {mesh!r}. Build one with "
            "bayes_gmm.sharding.row_mesh(devices)."
        )
    return mesh if mesh.size > 1 else None


def rows_per_device(n_samples: int, mesh: Mesh) -> int:
    return -(-n_samples // mesh.size)


def device_chunks(a, mesh: Mesh, chunk: int):
    """(N, W) -> (n_devices, n_chunks, W, chunk): rows split into equal contiguous blocks
    (zero-padded at the end), each cut into feature-major chunks, placed on the mesh."""
    n_rows, width = a.shape
    n_chunks = -(-rows_per_device(n_rows, mesh) // chunk)
    padded = mesh.size * n_chunks * chunk
    a = jnp.pad(a, [(0, padded - n_rows), (0, 0)])
    a = jnp.swapaxes(a.reshape(mesh.size, n_chunks, chunk, width), 2, 3)
    return lax.with_sharding_constraint(a, NamedSharding(mesh, P(mesh.axis_names[0])))


def sum_over_devices(fn, mesh: Mesh, chunks):
    """``fn`` on every device's share of ``chunks`` (a pytree with a leading device axis):
    its first output (a pytree) summed over the devices, its second stacked along a
    leading device axis."""
    axis = mesh.axis_names[0]

    def local(chunks):
        summed, stacked = fn(jax.tree.map(lambda a: a[0], chunks))
        return lax.psum(summed, axis), jax.tree.map(lambda a: a[None], stacked)

    # check_vma=False: the scans inside start from replicated zeros and carry per-device
    # sums, which JAX's varying-axis check would otherwise ask to be cast explicitly.
    return jax.shard_map(
        local, mesh=mesh, in_specs=(P(axis),), out_specs=(P(), P(axis)), check_vma=False
    )(chunks)


__all__ = ["row_mesh", "resolve_mesh"]
