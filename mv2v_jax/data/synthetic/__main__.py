"""`python -m mv2v_jax.data.synthetic OUT.png --preset small --seed 0`: a scene's contact sheet (preview.main)."""

from mv2v_jax.config import run_app
from mv2v_jax.data.synthetic.preview import main

run_app(main, absl_flags=False)
