"""Vision features: DINOv2 frame embeddings for retrieval."""
