"""`python -m mv2v_jax.data.synthetic OUT.png --preset small --seed 0`: a scene's contact sheet (preview.main)."""

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

from mv2v_jax.config import run_app
from mv2v_jax.data.synthetic.preview import main

run_app(main, absl_flags=False)
