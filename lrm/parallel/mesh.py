"""Meshes over the available devices.

Axes are always (data, fsdp, tensor). Auto axis types are used on purpose: Explicit axes (the
`jax.make_mesh` default in recent jax) reject contractions over sharded dimensions.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from lrm.core.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Fills one -1 entry with "the rest of the devices" and checks the product."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ConfigError("mesh.shape", f"needs {len(MESH_AXES)} sizes {MESH_AXES}, got {shape}")
  if shape.count(-1) > 1:
    raise ConfigError("mesh.shape", f"at most one -1 allowed, got {shape}")
  if any(s == 0 or s < -1 for s in shape):
    raise ConfigError("mesh.shape", f"sizes must be positive or -1, got {shape}")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ConfigError("mesh.shape", f"{shape} does not divide {num_devices} devices")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ConfigError("mesh.shape", f"{shape} uses {math.prod(shape)} devices, "
                      f"but {num_devices} are available")
  return shape


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh; `-1` takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(shape, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))


def make_hybrid_mesh(shape: Sequence[int], dcn_shape: Sequence[int],
                     devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh whose axes are `shape` within a slice times `dcn_shape` across slices.

  Axis i has size shape[i] * dcn_shape[i]; devices of one slice (a TPU slice, or one
  process's GPUs elsewhere) are kept together so the fast links carry the inner axes and only
  the `dcn` part crosses the slow network (maxtext's ici / dcn split). `-1` in `shape` means
  the rest of one slice's devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  dcn = tuple(int(s) for s in dcn_shape)
  if len(dcn) != len(MESH_AXES) or any(s < 1 for s in dcn):
    raise ConfigError("mesh.dcn_shape", f"needs {len(MESH_AXES)} positive sizes {MESH_AXES}, "
                      f"got {tuple(dcn_shape)}")
  slices = math.prod(dcn)
  if len(devices) % slices:
    raise ConfigError("mesh.dcn_shape", f"{dcn} ({slices} slices) does not divide "
                      f"{len(devices)} devices")
  ici = resolve_mesh_shape(shape, len(devices) // slices)
  if slices == 1:
    return make_mesh(ici, devices)
  # TPU devices know their slice; elsewhere each process is one "slice" (granule).
  by_process = not hasattr(devices[0], "slice_index")
  try:
    grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices,
                                                process_is_granule=by_process)
  except ValueError as e:  # e.g. 2 slices asked for on a single-process job
    raise ConfigError("mesh.dcn_shape", str(e)) from e
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def mesh_from_config(section, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The `mesh` config section: `shape` per slice, optional `dcn_shape` across slices."""
  dcn = tuple(section.get("dcn_shape", (1,) * len(MESH_AXES)) or (1,) * len(MESH_AXES))
  return make_hybrid_mesh(section.get("shape", (-1, 1, 1)), dcn, devices)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Shards the leading (batch) dimension over data and fsdp, replicates the rest."""
  return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]
