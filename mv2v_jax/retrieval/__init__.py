"""Retrieval of relevant past outputs from the external memory (docs/paper.md, "Memory" and the retrieval sections).

fov.py (VideoFOV bitmasks and scores, novel view synthesis), similarity.py (source-segment embeddings
and cosine similarity, long video editing), ranking.py (the top-k rule both share), bank.py (the
durable on-disk memory bank of one editing session). Nothing is imported here, so that the bank,
which needs only NumPy, loads without JAX.
"""
