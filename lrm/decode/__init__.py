"""Decoding: constrained beam search over valid Semantic IDs (generative retrieval)."""

from lrm.decode.beam import BeamResult, beam_search, codes_to_items, leaves_to_items

__all__ = ["BeamResult", "beam_search", "codes_to_items", "leaves_to_items"]
