"""lrm: recommendation with Semantic IDs in JAX.

Sub-packages follow the data flow (docs/ARCHITECTURE.md):
core -> data -> encoders -> sid -> tokens -> tasks -> models/train -> decode -> eval,
with parallel usable from any stage.
"""

__version__ = "0.1.0"
