"""Memory-V2V in JAX: memory-augmented video-to-video diffusion on Wan backbones."""

__version__ = "0.1.0"
