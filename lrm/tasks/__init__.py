"""Training objectives as examples: next-item retrieval (more tasks join per issue)."""
