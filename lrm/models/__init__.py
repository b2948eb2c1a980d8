"""Models: one architecture per file, built from the shared layers in layers.py."""
