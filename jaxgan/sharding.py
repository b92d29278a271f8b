"""Every sharding decision of jaxgan, in one place.

The mesh has two axes: "data" (pure data parallelism) and "fsdp" (data parallelism that also
splits large weights and their optimizer state). A batch is split over both axes; a weight is
replicated unless FSDP is on and it is large, in which case its largest dimension divisible by
the fsdp axis is split over it. The same shape-based rule covers parameters, EMA and Adam moments.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxgan.errors import ConfigError

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_data: int = -1, mesh_fsdp: int = 1, devices=None) -> Mesh:
  """A (data, fsdp) mesh over all devices; mesh_data=-1 takes what fsdp leaves.

  Devices of several TPU slices (multi-slice: `slice_index` differs) get a hybrid mesh: the
  slices are folded into the data axis, which alone crosses the slower network between slices,
  while FSDP stays inside a slice.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  slices = num_slices(devices)
  per_slice = n // slices
  if per_slice % mesh_fsdp:
    where = f"the {per_slice} devices of a slice" if slices > 1 else f"the {n} devices"
    raise ConfigError(f"train.mesh_fsdp={mesh_fsdp} does not divide {where}")
  data = n // mesh_fsdp if mesh_data == -1 else mesh_data
  if data * mesh_fsdp != n:
    raise ConfigError(
        f"train.mesh_data={mesh_data} x train.mesh_fsdp={mesh_fsdp} != {n} devices")
  # Auto axes keep GSPMD propagation on jax >= 0.11, where make_mesh defaults to explicit axes.
  auto = (jax.sharding.AxisType.Auto,) * 2
  if slices == 1:
    return jax.make_mesh((data, mesh_fsdp), BATCH_AXES, axis_types=auto, devices=devices)
  # fsdp divides a slice's devices, so data (= slices x what fsdp leaves of one) splits too.
  from jax.experimental import mesh_utils  # pylint: disable=import-outside-toplevel
  grid = mesh_utils.create_hybrid_device_mesh(
      (data // slices, mesh_fsdp), (slices, 1), devices,
      allow_split_physical_axes=devices[0].device_kind in ("TPU v5 lite", "TPU v5e"))
  return Mesh(grid, BATCH_AXES, axis_types=auto)


def num_slices(devices) -> int:
  """How many TPU slices `devices` span (1 for anything without a `slice_index`)."""
  return len({getattr(d, "slice_index", 0) or 0 for d in devices})


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch(mesh: Mesh, leading: int = 0) -> NamedSharding:
  """Sharding of an array whose axis `leading` is the batch."""
  return NamedSharding(mesh, P(*([None] * leading), BATCH_AXES))


def weight_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> P:
  """The FSDP rule: split the largest dimension that the fsdp axis divides, if big enough."""
  if fsdp_size <= 1 or not shape or int(np.prod(shape)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda i: -shape[i]):
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(abstract_state, mesh: Mesh, *, fsdp_min_size: int):
  """Shardings for a train-state pytree of ShapeDtypeStructs."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(
      lambda x: NamedSharding(mesh, weight_spec(tuple(x.shape), fsdp, fsdp_min_size)),
      abstract_state)
