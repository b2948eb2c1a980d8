"""The one table mapping logical axis names (what modules annotate) to mesh axes.

Modules only name logical axes; this table decides where they live (maxtext's base.yml idea).
Shape letters used across lrm: b batch, l length, c SID level, k codebook, d embed.
"""

import contextlib

import jax
from flax import nnx

LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("level", None),
    ("codebook", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
)


def sharding_context(mesh):
  """Where annotated NNX variables are created sharded: the mesh set and these rules active.

  Models and their optimizer state must be built inside it (flax shards eagerly on creation);
  with `mesh=None` it does nothing, and parameters stay plain arrays.
  """
  scope = contextlib.ExitStack()
  if mesh is not None:
    scope.enter_context(jax.set_mesh(mesh))
    scope.enter_context(nnx.logical_axis_rules(LOGICAL_AXIS_RULES))
  return scope
