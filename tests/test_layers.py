"""Imports point down (docs/design.md, "Layout and layers"): read every import of the package with `ast`,
lazy ones inside functions included, and check each against the layer order."""

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# mv2v_jax's modules and subpackages, lowest first; a package may import only from lower layers and itself.
LAYERS = (
    {"interrupts"},  # Ctrl-C handling for run_app (config) and the orbax callers; imports nothing of ours
    {"geometry", "config", "cache", "cli_start", "__init__"},  # of ours: interrupts, the version from __init__
    {"io", "parallel", "diffusion", "trajectories"},
    {"models", "retrieval"},
    {"memory"},
    {"data"},
    {"tasks"},
    {"pipelines", "train"},
    {"eval", "aot"},
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
REPOSITORY_SCRIPTS = {"bench", "tests", "configs", "train", "sample", "common"}  # never imported by the library


def imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in `path` (or in `source`, as if it were `path`), lazy ones
    inside functions included; relative imports are resolved."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            found.append((node.lineno, ".".join(p for p in (base, node.module or "") if p)))
    return sorted(found)


def part(module: str) -> str | None:
    """The mv2v_jax layer name of `module` (`mv2v_jax.models.wan.dit` -> `models`), None outside the package."""
    parts = module.split(".")
    if parts[0] != "mv2v_jax":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def library_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_every_part_of_the_package_has_a_layer():
    children = [p for p in (ROOT / "mv2v_jax").iterdir() if p.name != "__pycache__"]
    parts = {p.stem for p in children if p.suffix == ".py"} | {p.name for p in children if p.is_dir()}
    assert parts == set(RANK), "add new modules to LAYERS (and to docs/design.md)"


@pytest.mark.parametrize("path", library_files("mv2v_jax"), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path):
    own = part(".".join(path.relative_to(ROOT).with_suffix("").parts))
    upward = []
    for line, module in imports(path):
        top = module.split(".")[0]
        if top in REPOSITORY_SCRIPTS or top == "convert_weights":
            upward.append(f"line {line}: {module} (outside the library)")
        target = part(module)
        if own == "geometry" and target not in (None, own):
            upward.append(f"line {line}: {module} (geometry imports nothing of ours)")
        elif target not in (None, own, "__init__") and RANK[target] >= RANK[own]:
            upward.append(f"line {line}: {module} ({target} is not below {own})")
    assert not upward, f"{path.relative_to(ROOT)} imports upward:\n" + "\n".join(upward)


@pytest.mark.parametrize("package", ["mv2v_jax", "convert_weights"])
def test_the_library_does_not_edit_sys_path(package: str):
    offenders = [str(p.relative_to(ROOT)) for p in library_files(package) if "sys.path" in p.read_text()]
    assert not offenders


def test_the_layer_check_sees_a_violation():
    """The checker itself: an upward import, a lazy one and a relative one are all found."""
    source = "\n".join(
        ["import mv2v_jax.pipelines.build", "def f():", "  from mv2v_jax.train import loop", "from ..tasks import base"]
    )
    path = ROOT / "mv2v_jax" / "data" / "probe.py"
    found = [m for _, m in imports(path, source)]
    assert found == ["mv2v_jax.pipelines.build", "mv2v_jax.train", "mv2v_jax.tasks"]
    assert [RANK[part(m)] > RANK["data"] for m in found] == [True, True, True]


def library_modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name) -> its file."""
    modules = {}
    for path in library_files("mv2v_jax"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def module_graph(modules: dict[str, Path], sources: dict[str, str] | None = None) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (`mv2v_jax.a.b` for `from mv2v_jax.a.b import name`), lazy
    and TYPE_CHECKING imports included; a package's imports of its own submodules are left out.
    `sources` stands in for the files' text (the checker's own test)."""
    graph = {}
    for name, path in modules.items():
        targets = set()
        for _, module in imports(path, (sources or {}).get(name)):
            while module and module not in modules:
                module = module.rpartition(".")[0]
            if module and module != name and not module.startswith(f"{name}."):
                targets.add(module)
        graph[name] = targets
    return graph


def test_no_import_cycles():
    """No module imports one that imports it back, even for type hints only (a circle hides a missing layer)."""
    try:
        graphlib.TopologicalSorter(module_graph(library_modules())).prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_the_cycle_check_sees_a_cycle():
    """A lazy import back is a cycle too; the same modules without it are not."""
    modules = {name: ROOT / "mv2v_jax" / "data" / f"{name[-1]}.py" for name in ("mv2v_jax.data.a", "mv2v_jax.data.b")}
    sources = {
        "mv2v_jax.data.a": "from mv2v_jax.data.b import x",
        "mv2v_jax.data.b": "def f():\n  from mv2v_jax.data.a import y",
    }
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(module_graph(modules, sources)).prepare()
    sources["mv2v_jax.data.b"] = "import numpy"
    graphlib.TopologicalSorter(module_graph(modules, sources)).prepare()
