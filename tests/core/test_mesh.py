import jax
import pytest

from lrm.core.errors import ConfigError
from lrm.parallel import make_mesh
from lrm.parallel.mesh import resolve_mesh_shape


def test_resolve_mesh_shape():
  assert resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
  assert resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
  with pytest.raises(ConfigError, match="mesh.shape"):
    resolve_mesh_shape((3, -1, 1), 8)
  with pytest.raises(ConfigError, match="mesh.shape"):
    resolve_mesh_shape((-1, -1, 1), 8)
  with pytest.raises(ConfigError, match="mesh.shape"):
    resolve_mesh_shape((2, 2, 1), 8)


def test_make_mesh_uses_all_devices():
  assert jax.device_count() == 8  # conftest: 8 host devices
  mesh = make_mesh((2, 2, -1))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
