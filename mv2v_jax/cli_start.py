"""Imported first by every command-line tool, before its other imports:

    import mv2v_jax.cli_start  # noqa: F401  (Ctrl-C in the imports below: one line, exit 130)

A tool spends its first seconds importing (JAX, flax, torch) before `config.run_app` answers Ctrl-C, and a
KeyboardInterrupt there is a traceback from inside an import. Imported by the program itself (its
`__main__`), this has Ctrl-C end it at once with run_app's line and exit 130 until run_app takes over
(`interrupts.guard_start`). Imported by anything else (a test importing a bench script), it does nothing.
ruff's isort keeps the import first (the `start` section of pyproject.toml).
"""

import sys

from mv2v_jax import interrupts


def _imported_by_main() -> bool:
    """Whether the module importing this one, the first frame outside the import machinery, is `__main__`."""
    frame = sys._getframe(1).f_back  # past this module's body
    while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        frame = frame.f_back
    return frame is not None and frame.f_globals.get("__name__") == "__main__"


if _imported_by_main():
    interrupts.guard_start()
