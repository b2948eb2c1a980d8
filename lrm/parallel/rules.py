"""The one table mapping logical axis names (what modules annotate) to mesh axes.

Modules only name logical axes; this table decides where they live (maxtext's base.yml idea).
Shape letters used across lrm: b batch, l length, c SID level, k codebook, d embed.
"""

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
