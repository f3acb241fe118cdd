"""Training data: procedural multi-camera scenes (`synthetic`) and TFDS dataset builders (`tfds`)."""
