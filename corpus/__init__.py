"""Corpus plumbing behind data.py: reading raw files (readers), normalization and rule
filters (textclean), exact and near-duplicate removal (dedup), the n-gram perplexity
filter (perplexity), and the token shards training reads (shards)."""
