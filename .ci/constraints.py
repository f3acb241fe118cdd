"""constraints.txt: the versions the tests ran with, of everything `pip install -e '.[test,tpu]'` pulls in.

    python .ci/constraints.py           # rewrite constraints.txt from this environment (`make constraints`)
    python .ci/constraints.py --check   # exit 1 when constraints.txt differs from this environment

The closure is pyproject.toml's dependencies and the `test` and `tpu` extras, followed through the
installed distributions' own requirements (with their extras and this platform's markers). A local
version label (torch's `+cpu`) is dropped: `torch==2.13.0` accepts the CPU build where an index offers
it and the plain release elsewhere.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("test", "tpu")
HEADER = """\
# The versions the test suite ran with, for `pip install -c constraints.txt -e '.[test,tpu]'` (make install,
# CI). pyproject.toml keeps the ranges a library user installs against. Regenerate after changing a
# dependency and running the tests: make constraints
"""


def _wanted(requirement: Requirement, extras: set[str]) -> bool:
    """Whether a requirement applies on this platform for one of `extras` ("" is the distribution itself)."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""})


def locked_versions() -> dict[str, str]:
    """Installed version of every distribution mv2v-jax[test,tpu] pulls in, by name as its metadata spells it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pending = [Requirement(r) for r in project["dependencies"]]
    pending += [Requirement(r) for extra in EXTRAS for r in project["optional-dependencies"][extra]]
    seen: dict[str, set[str]] = {}  # canonical name -> extras followed
    versions: dict[str, str] = {}
    while pending:
        requirement = pending.pop()
        key = canonicalize_name(requirement.name)
        if key in seen and requirement.extras <= seen[key]:
            continue
        seen[key] = seen.get(key, set()) | requirement.extras
        try:
            distribution = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            sys.exit(f"error: {requirement.name} is required ({requirement}) but not installed: run make install")
        versions[distribution.metadata["Name"]] = Version(distribution.version).public
        for line in distribution.requires or []:
            dependency = Requirement(line)
            if _wanted(dependency, seen[key]):
                pending.append(dependency)
    return versions


def render(versions: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={versions[name]}\n" for name in sorted(versions, key=str.lower))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare constraints.txt with this environment")
    args = parser.parse_args()
    target = ROOT / "constraints.txt"
    text = render(locked_versions())
    if args.check:
        old = set(target.read_text().splitlines()) if target.exists() else set()
        new = set(text.splitlines())
        for line in sorted(new - old):
            print(f"error: constraints.txt lacks {line} (installed); run make constraints", file=sys.stderr)
        for line in sorted(old - new):
            print(f"error: constraints.txt has {line}, not what is installed; run make constraints", file=sys.stderr)
        return int(old != new)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    staging.write_text(text)
    staging.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
