"""Text conditioning: the umT5 encoder, its tokenizer, and the on-disk prompt-embedding cache."""
