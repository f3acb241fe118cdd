"""Download the weights an experiment config reads from the Hugging Face Hub, and convert them where it reads them.

    python -m convert_weights.fetch --config configs/recammaster_nvs.py
    python -m convert_weights.fetch --config configs/lucy_edit_long.py --accept_license

The config's `release` section (configs/releases.py) names Hugging Face repositories at pinned commits
and, for each weights folder of the config (`sample.weights`, `sample.codec.weights`, ...), the files it
is converted from and by which converter. Each folder not yet in place is

1. downloaded: exactly those files, by huggingface_hub, into its cache (`HF_HUB_CACHE`), or with
   `--local_dir DIR` as plain files under DIR/<org>/<name>; resumable, with the hub's progress bars;
   with `HF_HUB_OFFLINE=1` the files come from there alone, and one that is not there is named;
2. converted by the converter's own function (the one its CLI runs) into a hidden staging folder beside
   the target, which also gets MODEL_CARD.md (source, commit, licence) and release.json (what it was
   made from), both added to its checksums; the DiT's architecture is checked against the config's
   `model`; then the folder is renamed into place and every file verified against checksums.json;
3. printed.

A folder already in place is checked instead (its checksums; that its release.json names the same
sources; the DiT against `model`) and left alone: a second run downloads and writes nothing, and says
so. A folder that is there but was not made from these sources (converted by hand, random weights) is
refused, named, before anything is downloaded; `--overwrite` converts every folder again. A failure
leaves every target folder as it was (or, for those already done, complete).

Licences are printed before the download and written into each folder's MODEL_CARD.md. Weights released
for non-commercial use only (LucyEdit) are fetched only with `--accept_license`: consent is stated on
the command line, not asked at a prompt, so a script or batch job states it and nothing waits for a
terminal.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mv2v_jax.cli_start  # noqa: F401  (first: Ctrl-C in the imports below is one line, exit 130)

from absl import flags, logging
from ml_collections import config_flags

from convert_weights.dinov2 import convert_dinov2
from convert_weights.memory_dit import convert_memory_dit
from convert_weights.umt5 import convert_umt5
from convert_weights.wan_vae import convert_vae
from mv2v_jax.config import run_app
from mv2v_jax.io.atomic import fsync_path, write_json
from mv2v_jax.memory.model import MemoryConfig
from mv2v_jax.models.weights import add_to_checksums, read_config, verify_checksums

HUB = "https://huggingface.co/"
RELEASE_FILE = "release.json"
CARD_FILE = "MODEL_CARD.md"
COMMAND = "python -m convert_weights.fetch"


class FetchError(ValueError):
    """A release that cannot be fetched, or a folder in the way; the message names the repository, file or folder."""


@dataclasses.dataclass(frozen=True)
class Repo:
    """A Hugging Face model repository at a revision (a commit, or a branch that should become one)."""

    id: str
    revision: str
    license: str
    non_commercial: bool

    def __str__(self) -> str:
        return f"{self.id}@{self.revision}"


@dataclasses.dataclass(frozen=True)
class Output:
    """A weights folder of the config: the field holding its path, the converter, the files per repository."""

    field: str
    path: Path
    convert: str
    files: dict[str, tuple[str, ...]]

    @property
    def label(self) -> str:
        return f"{self.field} ({self.path})"


def expected_model(config: Mapping[str, Any]) -> MemoryConfig:
    """The MemoryDiT the experiment config describes (its `model` section)."""
    return MemoryConfig.from_config(config["model"])


def _memory_dit(src: Path, out: Path, config: Mapping[str, Any]) -> Path:
    """The config's MemoryDiT (its adapters, tokenizers and merging) on the checkpoint's DiT."""
    model = expected_model(config)
    memory = model.record()["memory"]
    return convert_memory_dit(
        src, out, adapters=model.adapters, memory=memory, param_dtype=model.dit.param_dtype, progress=True
    )


def _copy(src: Path, out: Path, config: Mapping[str, Any]) -> Path:
    """The files as released (a tokenizer), with checksums of their own."""
    out.mkdir()
    for file in sorted(src.iterdir()):
        shutil.copyfile(file, out / file.name)
    add_to_checksums(out, [file.name for file in src.iterdir()])
    return out


# converter name -> (what it makes, in words; `(source folder, output folder, experiment config) -> output`)
CONVERTERS: dict[str, tuple[str, Callable[[Path, Path, Mapping[str, Any]], Path]]] = {
    "memory_dit": (
        "the MemoryDiT of the config's `model` (convert_weights.memory_dit): the DiT and block adapters converted, "
        "the memory tokenizers tiled from its patch embedding, the mergers at initialisation",
        _memory_dit,
    ),
    "wan_vae": ("the Wan VAE (convert_weights.wan_vae)", lambda src, out, _: convert_vae(src, out, progress=True)),
    "umt5": ("the umT5 encoder (convert_weights.umt5)", lambda src, out, _: convert_umt5(src, out, progress=True)),
    "dinov2": ("DINOv2 (convert_weights.dinov2)", lambda src, out, _: convert_dinov2(src, out, progress=True)),
    "copy": ("the files as released", _copy),
}


def read_release(config: Mapping[str, Any], spec: str) -> tuple[dict[str, Repo], list[Output]]:
    """The config's repositories and weights folders; a `FetchError` names what is missing or wrong."""
    release = config.get("release")
    if not release:
        raise FetchError(
            f"{spec} has no `release` section, so nothing says where its weights are published "
            "(configs/recammaster_nvs.py and configs/lucy_edit_long.py have one: configs/releases.py)"
        )
    try:
        repos = {key: Repo(**dict(value)) for key, value in release["repos"].items()}
    except (KeyError, TypeError) as e:
        raise FetchError(
            f"{spec}: release.repos needs id, revision, license and non_commercial per repository ({e})"
        ) from e
    outputs = []
    for name, entry in release["outputs"].items():
        key = f"release.outputs.{name}"
        if missing := sorted({"field", "convert", "files"} - set(entry)):
            raise FetchError(f"{spec}: {key} needs {', '.join(missing)}")
        value: Any = config
        for part in entry["field"].split("."):
            if not hasattr(value, "keys") or part not in value:
                raise FetchError(f"{spec}: {key}.field={entry['field']!r} is not a field of the config")
            value = value[part]
        if entry["convert"] not in CONVERTERS:
            raise FetchError(f"{spec}: {key}.convert={entry['convert']!r}; choose one of {sorted(CONVERTERS)}")
        if unknown := sorted(set(entry["files"]) - set(repos)):
            raise FetchError(f"{spec}: {key}.files names {unknown}, which release.repos does not have")
        files = {repo: tuple(patterns) for repo, patterns in entry["files"].items()}
        outputs.append(Output(entry["field"], Path(value), entry["convert"], files))
    return repos, outputs


def sources(output: Output, repos: Mapping[str, Repo]) -> dict[str, Any]:
    """What a folder is made from (release.json records it; a folder in place must record the same)."""
    return {
        "convert": output.convert,
        "sources": {
            repos[key].id: {"revision": repos[key].revision, "files": list(files)}
            for key, files in output.files.items()
        },
    }


def origin(recorded: Any) -> str:
    """`repo@revision, ...` of a `sources(...)["sources"]` mapping (as release.json holds it)."""
    if not isinstance(recorded, dict):
        return repr(recorded)
    return ", ".join(
        f"{repo}@{entry.get('revision') if isinstance(entry, dict) else entry}" for repo, entry in recorded.items()
    )


def check_model(output: Output, path: Path, config: Mapping[str, Any]) -> None:
    """A converted MemoryDiT must be the config's `model`: the same architecture and memory modules."""
    if output.convert != "memory_dit":
        return
    want = json.loads(json.dumps(expected_model(config).record()))  # as config.json holds it: lists, not tuples
    got = read_config(path)
    differ = [
        f"{section}.{k}={got.get(section, {}).get(k)!r} (model: {v!r})"
        for section in ("architecture", "memory")
        for k, v in want[section].items()
        if got.get(section, {}).get(k) != v
    ]
    if differ:
        raise FetchError(f"{output.label}: the converted model is not the config's `model`: {', '.join(differ)}")


def check_in_place(output: Output, repos: Mapping[str, Repo], config: Mapping[str, Any]) -> None:
    """Passes if the folder in place was made from this release and is intact; else names what is wrong."""
    path = output.path
    try:
        recorded = json.loads((path / RELEASE_FILE).read_text())
    except (OSError, ValueError):
        recorded = None
    want = sources(output, repos)
    if not isinstance(recorded, dict) or {k: recorded.get(k) for k in want} != want:
        if isinstance(recorded, dict):
            made = f"its {RELEASE_FILE} says {recorded.get('convert')} from {origin(recorded.get('sources'))}"
        else:
            made = f"it has no {RELEASE_FILE}: converted by hand, or random weights?"
        raise FetchError(
            f"{output.label} exists and was not made by {output.convert} from {origin(want['sources'])} ({made}); "
            "pass --overwrite to replace it, or --config.weights_dir=DIR"
        )
    try:
        verify_checksums(path)
    except ValueError as e:
        raise FetchError(f"{e} (--overwrite fetches and converts it again)") from e
    check_model(output, path, config)


def cache_location(target: Path | None) -> str:
    from huggingface_hub import constants

    return str(target) if target is not None else f"the Hugging Face cache ({constants.HF_HUB_CACHE})"


def download(repo: Repo, patterns: list[str], local_dir: Path | None) -> tuple[Path, dict[str, list[str]]]:
    """The repository's folder (a cache snapshot, or under `local_dir`) holding `patterns`, and the files each
    pattern matched there; downloads what is missing unless HF_HUB_OFFLINE is set."""
    from huggingface_hub import constants, snapshot_download

    target = None if local_dir is None else local_dir / repo.id
    offline = constants.is_offline_mode()
    try:
        root = Path(snapshot_download(repo.id, revision=repo.revision, allow_patterns=patterns, local_dir=target))
    except OSError as e:  # every hub error: nothing cached offline, an incomplete snapshot, HTTP and network errors
        if offline:
            raise FetchError(missing_offline(repo, patterns, target)) from e
        raise FetchError(f"{repo}: downloading {', '.join(patterns)} failed: {one_line(e)}") from e
    present = [
        p.relative_to(root).as_posix()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(root).parts  # local_dir: the hub's own metadata
    ]
    found = {pattern: [name for name in present if fnmatch.fnmatch(name, pattern)] for pattern in patterns}
    if missing := [pattern for pattern, names in found.items() if not names]:
        if offline:
            raise FetchError(missing_offline(repo, missing, target))
        raise FetchError(f"{repo} has no file matching {', '.join(missing)}: check release.outputs in the config")
    return root, found


def missing_offline(repo: Repo, patterns: list[str], target: Path | None) -> str:
    return (
        f"{repo}: {', '.join(patterns)} not in {cache_location(target)} and HF_HUB_OFFLINE is set; "
        "run without HF_HUB_OFFLINE (with network access) to download them"
    )


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def model_card(output: Output, repos: Mapping[str, Repo], files: Mapping[str, list[str]], spec: str) -> str:
    used = [repos[key] for key in output.files]
    lines = [
        f"# {output.path.name}",
        "",
        f"{CONVERTERS[output.convert][0].capitalize()}, for `{output.field}` of {spec}: written by",
        f"`{COMMAND} --config {spec}` (mv2v-jax) from the files below. checksums.json lists every file here.",
        "",
        "## Source",
        "",
        *(f"- [{repo.id}]({HUB}{repo.id}) at `{repo.revision}`: {', '.join(files[repo.id])}" for repo in used),
        "",
        "## Licence",
        "",
        *(f"- {repo.id}: {repo.license}" for repo in used),
    ]
    if restricted := [repo.id for repo in used if repo.non_commercial]:
        lines += [
            "",
            f"For non-commercial use only: these weights are converted from {', '.join(restricted)}, and its "
            "licence applies to them as to the files it publishes.",
        ]
    return "\n".join(lines) + "\n"


def build(
    output: Output,
    roots: Mapping[str, Path],
    found: Mapping[str, Mapping[str, list[str]]],
    repos: Mapping[str, Repo],
    config: Mapping[str, Any],
    spec: str,
) -> Path:
    """Converts the output's files in a staging folder beside it, then renames that into place and verifies it."""
    stage = output.path.parent / f".{output.path.name}.fetch"
    shutil.rmtree(stage, ignore_errors=True)  # what an interrupted run left
    (stage / "src").mkdir(parents=True)
    try:
        files = {}
        for key, patterns in output.files.items():  # the converter reads a folder of exactly these files
            names = sorted({name for pattern in patterns for name in found[key][pattern]})
            files[repos[key].id] = names
            for name in names:
                link = stage / "src" / Path(name).name
                if link.is_symlink():
                    raise FetchError(f"{output.label}: two source files are named {link.name}")
                link.symlink_to(os.path.realpath(roots[key] / name))
        out = CONVERTERS[output.convert][1](stage / "src", stage / "out", config)
        check_model(output, out, config)
        (out / CARD_FILE).write_text(model_card(output, repos, files, spec))
        commits = {repos[k].id: roots[k].name for k in output.files if roots[k].parent.name == "snapshots"}
        write_json(out / RELEASE_FILE, sources(output, repos) | {"downloaded": files, "commits": commits})
        add_to_checksums(out, [CARD_FILE, RELEASE_FILE])
        if output.path.exists():  # --overwrite: the old folder leaves with the staging folder
            os.replace(output.path, stage / "old")
        os.replace(out, output.path)
        fsync_path(output.path.parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    verify_checksums(output.path)
    return output.path


def fetch(
    config: Mapping[str, Any],
    spec: str,
    *,
    accept_license: bool = False,
    local_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Downloads and converts every weights folder of `config` not yet in place (all with `overwrite`),
    printing what it does; returns the folders written."""
    repos, outputs = read_release(config, spec)
    pending = []
    for output in outputs:
        if output.path.exists() and not overwrite:
            check_in_place(output, repos, config)
            print(f"{output.label}: in place, from {origin(sources(output, repos)['sources'])}; checksums match")
        else:
            pending.append(output)
    if not pending:
        print(f"nothing to do: every weights folder of {spec} is in place")
        return []
    needed = list(dict.fromkeys(key for output in pending for key in output.files))
    for key in needed:
        print(f"licence of {repos[key].id}: {repos[key].license} ({HUB}{repos[key].id})")
    if restricted := [repos[key].id for key in needed if repos[key].non_commercial]:
        if not accept_license:
            raise FetchError(
                f"{', '.join(restricted)} is released for non-commercial use only; read its licence ({HUB}"
                f"{restricted[0]}) and pass --accept_license to download and convert it"
            )
        print(f"--accept_license: {', '.join(restricted)} will be used under its non-commercial licence")
    for key in needed:
        if len(repos[key].revision) != 40:
            print(f"warning: {repos[key]} is not pinned to a commit; release.json records the commit used")
    local = None if local_dir is None else Path(local_dir)
    roots, found = {}, {}
    for key in needed:
        patterns = list(dict.fromkeys(p for output in pending for p in output.files.get(key, ())))
        roots[key], found[key] = download(repos[key], patterns, local)
    written = []
    for output in pending:
        written.append(build(output, roots, found, repos, config, spec))
        print(f"wrote {output.label}: {CONVERTERS[output.convert][0]}")
    return written


FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.config is None:
        print("error: --config is required (e.g. --config configs/recammaster_nvs.py)", file=sys.stderr)
        return 1
    spec = config_flags.get_config_filename(FLAGS["config"])
    try:
        fetch(
            FLAGS.config,
            spec,
            accept_license=FLAGS.accept_license,
            local_dir=FLAGS.local_dir,
            overwrite=FLAGS.overwrite,
        )
    except (ValueError, OSError) as e:  # FetchError, ConversionError, WeightsError, a full disk, ...
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "experiment config whose weights to fetch", lock_config=True)
    flags.DEFINE_string("local_dir", None, "download into DIR/<org>/<name> instead of the Hugging Face cache")
    flags.DEFINE_bool("accept_license", False, "fetch weights released for non-commercial use only")
    flags.DEFINE_bool("overwrite", False, "convert every weights folder again, replacing those in place")
    run_app(main)
