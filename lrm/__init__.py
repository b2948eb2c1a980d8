"""lrm: recommendation with Semantic IDs in JAX.

Sub-packages follow the data flow (docs/ARCHITECTURE.md), and each imports only itself and
earlier ones (tests/test_layering.py checks it):
core -> parallel -> data -> encoders -> sid -> tokens -> tasks -> models -> train -> decode ->
eval -> jobs (lrm/jobs: pipeline, retrieval, lm, ranking, replay, rounds, finetune) -> cli.
"""

__version__ = "0.1.0"
