"""Semantic-ID tokenizers (k-means, RQ-KMeans, RQ-VAE), SID tables and their quality.

Codes are int32 [items, levels] in catalog order; level 0 is the coarsest.
"""
