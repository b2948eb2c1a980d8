"""The token vocabulary models read and write: special tokens, hashed user tokens, SID tokens."""

from lrm.tokens.sid_vocab import SIDVocab

__all__ = ["SIDVocab"]
