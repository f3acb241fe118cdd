"""Every command-line entry point of the repository goes through `mv2v_jax.config.run_app`, the guard that
keeps the bad-input promise: a bad flag is one error line and a non-zero exit, Ctrl-C is one line and
exit 130, never a traceback, from the tool's first import on (`mv2v_jax.cli_start`). The entry points
are found in the source (a module-level `if __name__ == "__main__":` block, or a package's
`__main__.py`), so a new one is checked too."""

import ast
import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ctrl_c import take_ctrl_c

REPO = Path(__file__).parents[1]
SOURCES = ("train.py", "sample.py", "convert_weights", "mv2v_jax", "bench")
PACKAGES = ("convert_weights", "mv2v_jax")  # run as `python -m`; the rest as scripts
ERROR_LINES = ("error: ", "FATAL Flags parsing error: ")  # ours, and absl's for its flags
WORKERS = 4  # the processes mostly import; 4 keep 2 cores busy
# Runs the entry point (the arguments after the first), the user pressing Ctrl-C the moment it parses its
# command line, inside `main` (argparse) or `app.run` (absl flags), or, with the first argument
# `import:NAME`, the moment its program imports NAME, the last of its module-level imports.
CTRL_C = """
import argparse, builtins, os, runpy, signal, sys
import mv2v_jax.config

def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)

def interrupted(original):
    def parse(*args, **kwargs):
        ctrl_c()
        return original(*args, **kwargs)
    return parse

def interrupted_import(original, name):
    def import_(*args, **kwargs):
        if args[0] == name and (args[1] or {}).get("__name__") == "__main__":
            ctrl_c()
        return original(*args, **kwargs)
    return import_

when, sys.argv = sys.argv[1], sys.argv[2:]
if when == "parsing":
    argparse.ArgumentParser.parse_args = interrupted(argparse.ArgumentParser.parse_args)
    mv2v_jax.config.parse_flags = interrupted(mv2v_jax.config.parse_flags)
else:
    builtins.__import__ = interrupted_import(builtins.__import__, when.removeprefix("import:"))
if sys.argv[0] == "-m":
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as `python script.py` has it
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def main_block(tree: ast.Module) -> ast.If | None:
    """The module's `if __name__ == "__main__":` statement, if it has one."""
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test).replace("'", '"') == '__name__ == "__main__"':
            return node
    return None


def entry_points() -> dict[str, tuple[ast.Module, ast.AST]]:
    """Each entry point's command (a script path, or `-m module`) -> its module, and the code in it that
    runs as the program."""
    found = {}
    files = [REPO / name for name in SOURCES if name.endswith(".py")]
    files += sorted(path for name in SOURCES if not name.endswith(".py") for path in (REPO / name).rglob("*.py"))
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        program = tree if path.name == "__main__.py" else main_block(tree)
        if program is None:
            continue
        relative = path.relative_to(REPO)
        if relative.parts[0] in PACKAGES:
            module = relative.parent if path.name in ("__main__.py", "__init__.py") else relative.with_suffix("")
            found[f"-m {'.'.join(module.parts)}"] = tree, program
        else:
            found[str(relative)] = tree, program
    return found


ENTRY_POINTS = entry_points()


def last_import(tree: ast.Module) -> str:
    """The module the last of the module-level import statements imports, as `__import__` is asked for it."""
    statement = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)][-1]
    return statement.module if isinstance(statement, ast.ImportFrom) else statement.names[-1].name


def calls_run_app(program: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "run_app"
        for node in ast.walk(program)
    )


def run_all(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    def run(command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *command],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            preexec_fn=take_ctrl_c,
        )

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(run, commands))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(ERROR_LINES)]


def test_every_entry_point_runs_under_run_app():
    assert {"train.py", "sample.py", "-m mv2v_jax.data.encode_latents", "-m convert_weights.checksums"} <= set(
        ENTRY_POINTS
    )
    unguarded = [command for command, (_, program) in ENTRY_POINTS.items() if not calls_run_app(program)]
    assert not unguarded, f"entry points not under run_app: {unguarded}"


def test_a_bad_flag_is_one_error_line_everywhere():
    results = run_all([[*command.split(), "--no-such-flag"] for command in ENTRY_POINTS])
    for command, result in zip(ENTRY_POINTS, results, strict=True):
        assert result.returncode in (1, 2), f"{command}: exit {result.returncode}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, f"{command}:\n{result.stderr[-3000:]}"
        assert len(error_lines(result.stderr)) == 1, f"{command}:\n{result.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("when", ["parsing", "importing"])
def test_ctrl_c_is_exit_130_everywhere(when):
    moments = {
        command: f"import:{last_import(tree)}" if when == "importing" else when
        for command, (tree, _) in ENTRY_POINTS.items()
    }
    results = run_all([["-c", CTRL_C, moments[command], *command.split()] for command in ENTRY_POINTS])
    for command, result in zip(ENTRY_POINTS, results, strict=True):
        assert result.returncode == 130, f"{command}: exit {result.returncode}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, f"{command}:\n{result.stderr[-3000:]}"
        assert error_lines(result.stderr) == ["error: interrupted (Ctrl-C)"], f"{command}:\n{result.stderr[-3000:]}"
