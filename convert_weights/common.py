"""The conversion engine shared by every converter: rules, coverage checks, streaming writes.

A converter is a list of `Rule`s mapping source tensor names (regular expressions) to parameter
paths of our model, each with a `Layout` (how PyTorch stores the tensor vs how we do). `plan` checks
coverage both ways from the checkpoint headers alone, before a byte of data is read: every source
tensor used, every parameter (and every layer of a stacked parameter) filled exactly once, every
shape right. `convert` then builds one parameter at a time and hands it to the `WeightsWriter`, so
peak memory is about the largest (stacked) parameter; `read_params` assembles them in memory instead
(each converter's `convert_state_dict`: a PyTorch state dict -> our parameters, no files). A source
is anything with `names()`, `shape(name)`, `dtype(name)` and `read(name)`: a checkpoint on disk
(`sources.TensorSource`) or a state dict in memory (`sources.StateDict`). Progress bars are shown
only when asked (`progress=True`, as the CLIs do).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from convert_weights.sources import Tensors
from mv2v_jax.config import ArgumentParser
from mv2v_jax.io.atomic import check_can_create
from mv2v_jax.models.weights import WeightsWriter, flatten_paths

Path_ = tuple[str, ...]


class ConversionError(ValueError):
    """A checkpoint that does not fill the model; the message lists every offending name."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a PyTorch tensor maps onto our parameter layout."""

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    shape: Callable[[tuple[int, ...]], tuple[int, ...]]


IDENTITY = Layout("identity", lambda a: a, lambda s: tuple(s))
# torch Linear [out, in] -> kernel [in, out]
LINEAR = Layout("linear", lambda a: a.T, lambda s: tuple(s[::-1]))
# torch Conv3d [O, I, t, h, w] -> [t, h, w, I, O]
CONV3D = Layout("conv3d", lambda a: a.transpose(2, 3, 4, 1, 0), lambda s: (s[2], s[3], s[4], s[1], s[0]))
# torch Conv2d [O, I, h, w] -> [h, w, I, O]
CONV2D = Layout("conv2d", lambda a: a.transpose(2, 3, 1, 0), lambda s: (s[2], s[3], s[1], s[0]))


@dataclasses.dataclass(frozen=True)
class Rule:
    """Source names matching `pattern` fill the parameter `target`.

    `target` is a '/'-separated path formatted with the match's groups (`{1}`, `{2}`, ...). A named
    group `layer` makes the target a stacked parameter whose leading axis is indexed by it.
    """

    pattern: str
    target: str
    layout: Layout = IDENTITY

    def match(self, name: str) -> tuple[Path_, int | None] | None:
        m = re.fullmatch(self.pattern, name)
        if m is None:
            return None
        path = tuple(self.target.format(*m.groups()).split("/"))
        layer = m.groupdict().get("layer")
        return path, None if layer is None else int(layer)


@dataclasses.dataclass(frozen=True)
class Piece:
    source: str
    layer: int | None
    layout: Layout


def plan(
    names: Iterable[str],
    shape_of: Callable[[str], tuple[int, ...]],
    rules: Sequence[Rule],
    expected: Mapping[Path_, jax.ShapeDtypeStruct],
    rename: Callable[[str], str] = lambda n: n,
    dtype_of: Callable[[str], np.dtype] | None = None,
) -> dict[Path_, list[Piece]]:
    """Which source tensors fill which parameter; raises `ConversionError` listing every problem.

    With `dtype_of`, a tensor that is not floating point where the parameter is (or the other way
    round) is a problem too: casting it would pass an integer tensor off as weights.
    """
    pieces: dict[Path_, list[Piece]] = {}
    unused, shape_errors, duplicates = [], [], []
    for name in names:
        renamed = rename(name)
        rule, hit = next(((r, h) for r in rules if (h := r.match(renamed)) is not None), (None, None))
        if hit is None or hit[0] not in expected:
            unused.append(name)
            continue
        path, layer = hit
        want = tuple(expected[path].shape)
        got = rule.layout.shape(shape_of(name))
        if layer is not None:
            if layer >= want[0]:
                unused.append(f"{name} (layer {layer}, model has {want[0]})")
                continue
            want = want[1:]
        if got != want:
            shape_errors.append(f"{name} -> {'/'.join(path)}: {got} but the model needs {want}")
            continue
        dtype, wanted = dtype_of and dtype_of(name), expected[path].dtype
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating) != jnp.issubdtype(wanted, jnp.floating):
            shape_errors.append(f"{name} -> {'/'.join(path)}: dtype {dtype} but the model needs {np.dtype(wanted)}")
            continue
        slot = pieces.setdefault(path, [])
        if any(p.layer == layer for p in slot):
            duplicates.append(f"{name} -> {'/'.join(path)}" + ("" if layer is None else f"[{layer}]"))
            continue
        slot.append(Piece(name, layer, rule.layout))

    missing = []
    for path, struct in expected.items():
        got = pieces.get(path, [])
        layered = [p.layer for p in got if p.layer is not None]
        if not got:
            missing.append("/".join(path))
        elif layered:
            absent = sorted(set(range(struct.shape[0])) - set(layered))
            if absent:
                missing.append(f"{'/'.join(path)} layers {absent}")
    problems = [
        (f"{len(missing)} model parameters not filled", missing),
        (f"{len(unused)} checkpoint tensors not used", unused),
        (f"{len(shape_errors)} shape or dtype mismatches", shape_errors),
        (f"{len(duplicates)} parameters filled twice", duplicates),
    ]
    message = "; ".join(f"{title}: {', '.join(items)}" for title, items in problems if items)
    if message:
        raise ConversionError(message)
    return pieces


def iter_layers(
    read: Callable[[str], np.ndarray],
    pieces: Mapping[Path_, list[Piece]],
    expected: Mapping[Path_, jax.ShapeDtypeStruct],
    progress: bool = False,
) -> Iterator[tuple[Path_, int | None, np.ndarray]]:
    """Yields `(parameter, layer or None, array)` one source tensor at a time, in `expected`'s dtypes."""
    for path in tqdm(sorted(pieces), desc="converting", unit="param", leave=False, disable=not progress):
        dtype = np.dtype(expected[path].dtype)
        for piece in sorted(pieces[path], key=lambda p: -1 if p.layer is None else p.layer):
            yield path, piece.layer, piece.layout.apply(read(piece.source)).astype(dtype)


def read_params(
    source: Tensors,
    rules: Sequence[Rule],
    expected: Mapping[Path_, jax.ShapeDtypeStruct],
    *,
    rename: Callable[[str], str] = lambda n: n,
    progress: bool = False,
) -> dict[Path_, np.ndarray]:
    """Plans (refusing any gap), then assembles every parameter of `expected` in memory; `convert`
    streams into a weights directory instead."""
    pieces = plan(source.names(), source.shape, rules, expected, rename, source.dtype)
    params: dict[Path_, np.ndarray] = {}
    for path, layer, array in iter_layers(source.read, pieces, expected, progress):
        if layer is None:
            params[path] = array
        else:
            params.setdefault(path, np.empty(expected[path].shape, array.dtype))[layer] = array
    return params


def convert(
    source: Tensors,
    pieces: Mapping[Path_, list[Piece]],
    expected: Mapping[Path_, jax.ShapeDtypeStruct],
    writer: WeightsWriter,
    progress: bool = False,
) -> None:
    """Streams every parameter into `writer`, a stacked one layer by layer: one source tensor in memory."""
    slots = {}
    for path, layer, array in iter_layers(source.read, pieces, expected, progress):
        if layer is None:
            writer.write(path, array)
        else:
            if path not in slots:
                slots[path] = writer.create(path, expected[path].shape, expected[path].dtype, stacked=True)
            slots[path][layer] = array


def expected_params(build: Callable[[], nnx.Module]) -> dict[Path_, jax.ShapeDtypeStruct]:
    """Parameter path -> ShapeDtypeStruct of the module `build()` creates (nothing allocated)."""
    _, state = nnx.split(nnx.eval_shape(build))
    return flatten_paths(nnx.to_pure_dict(state))


def write_weights(
    source: Tensors,
    rules: Sequence[Rule],
    expected: Mapping[Path_, jax.ShapeDtypeStruct],
    out: str | Path,
    record: Mapping[str, Any],
    *,
    rename: Callable[[str], str] = lambda n: n,
    overwrite: bool = False,
    derived: Callable[[], Mapping[Path_, np.ndarray]] | None = None,
    progress: bool = False,
) -> Path:
    """Plans (refusing any gap before writing), then streams `source` into the weights directory `out`.

    `record` goes into the directory's config.json (model name, architecture, provenance). `derived`
    computes parameters the checkpoint does not hold (e.g. new modules initialised from converted
    ones); they are written after the checkpoint's.
    """
    pieces = plan(source.names(), source.shape, rules, expected, rename, source.dtype)
    with WeightsWriter(out, overwrite=overwrite) as writer:
        convert(source, pieces, expected, writer, progress)
        for path, array in (derived() if derived else {}).items():
            writer.write(path, np.asarray(array))
        return writer.commit(record)


def prefixed(rules: Sequence[Rule], prefix: str) -> tuple[Rule, ...]:
    """The same rules filling the parameters under `prefix/` (a model nested in a bigger one)."""
    return tuple(dataclasses.replace(r, target=f"{prefix}/{r.target}") for r in rules)


def run_cli(
    prog: str,
    doc: str,
    run: Callable[[argparse.Namespace], Path],
    argv: Sequence[str],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    param_dtypes: Sequence[str] = ("float32", "bfloat16"),
) -> int:
    """The shared converter CLI (its `main`, under `run_app`): SRC OUT [--param-dtype] [--overwrite] plus
    `add_arguments`; errors print and exit 1 (OUT is left as it was, as on Ctrl-C). The first of
    `param_dtypes` is the default ("auto": the checkpoint's)."""
    parser = ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="checkpoint folder or file (see above)")
    parser.add_argument("out", help="output weights directory (written atomically)")
    parser.add_argument(
        "--param-dtype",
        default=param_dtypes[0],
        choices=list(param_dtypes),
        help=f"dtype the parameters are stored and loaded in (default {param_dtypes[0]})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        src, out = Path(args.src).absolute(), Path(args.out).absolute()
        if out == src or out in src.parents:  # --overwrite would replace what is being read
            raise ValueError(f"OUT {args.out} is SRC or holds it; write the weights to another folder")
        if out.exists() and not args.overwrite:  # before SRC is read
            raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
        check_can_create(args.out)
        out = run(args)
    except (ValueError, OSError) as e:  # ConversionError, CheckpointError, an existing OUT, a full disk, ...
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0
