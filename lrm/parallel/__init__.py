"""Device meshes and the one table of logical-axis sharding rules."""

from lrm.parallel.mesh import MESH_AXES, make_mesh, batch_sharding, replicated
from lrm.parallel.rules import LOGICAL_AXIS_RULES

__all__ = ["MESH_AXES", "LOGICAL_AXIS_RULES", "make_mesh", "batch_sharding", "replicated"]
