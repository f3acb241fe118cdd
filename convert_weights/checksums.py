"""Add checksums to weights directories written before weights carried them, or check them.

    python -m convert_weights.checksums DIR [DIR ...]

A directory without `checksums.json` gets one, made from its files as they are now (so run this on
weights known to be good: the ones you have been sampling from); a directory with one is checked
against it. Parameters are never rewritten. Loading a directory without checksums works, with a
warning naming this command; with them, a damaged or overwritten parameter file is refused, named.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

from mv2v_jax.config import ArgumentParser, run_app
from mv2v_jax.models.weights import CHECKSUMS_FILE, add_checksums, verify_checksums


def main(argv: Sequence[str]) -> int:
    parser = ArgumentParser(
        prog="python -m convert_weights.checksums",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="weights directory")
    args = parser.parse_args(argv)
    failed = False
    for path in args.dirs:
        try:
            if (Path(path) / CHECKSUMS_FILE).exists():
                verify_checksums(path)
                print(f"{path}: every file matches {CHECKSUMS_FILE}")
            else:
                print(f"wrote {add_checksums(path)}")
        except (ValueError, OSError) as e:  # WeightsError, an unreadable or read-only folder
            print(f"error: {e}", file=sys.stderr)
            failed = True
    return int(failed)


if __name__ == "__main__":
    run_app(main, absl_flags=False)
