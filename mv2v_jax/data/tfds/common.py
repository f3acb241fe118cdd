"""What the dataset builders share: building with array_record files, the layout error, folder order."""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds

FILE_FORMAT = "array_record"  # random access through `as_data_source`, and no TensorFlow needed
MAX_LISTED_PROBLEMS = 20


class LayoutError(ValueError):
    """A dataset folder that is not in the layout its builder reads; the message names the scene or
    pair folder and what is wrong."""


def prepare(
    builder_class: type[tfds.core.GeneratorBasedBuilder],
    config: str | tfds.core.BuilderConfig,
    data_dir: str | os.PathLike,
    manual_dir: str | os.PathLike | None = None,
) -> tfds.core.GeneratorBasedBuilder:
    """Builds `builder_class` with `config` (a name of its BUILDER_CONFIGS or a config object) under
    `data_dir` as array_record files, reading from `manual_dir` where the dataset needs one, and
    returns the builder. A dataset already built there is reused; a failed build leaves nothing."""
    builder = builder_class(config=config, data_dir=os.fspath(data_dir), file_format=FILE_FORMAT)
    download_config = None if manual_dir is None else tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    build(builder, download_config)
    return builder


def build(builder: tfds.core.DatasetBuilder, download_config: tfds.download.DownloadConfig | None = None) -> None:
    """`builder.download_and_prepare`, announced in one honest line when there is something to build.

    TFDS prints "Downloading and preparing dataset Unknown size ..." and "... downloaded and prepared"
    on stdout, but our builders download nothing (they read local folders or generate scenes), so
    stdout is kept from TFDS meanwhile. Progress bars (stderr) and errors are untouched.
    """
    if not builder.is_prepared():
        print(f"building dataset {builder.info.full_name} in {builder.data_dir} (nothing is downloaded)", flush=True)
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(download_config=download_config)


def natural_key(path: Path) -> list[int | str]:
    """Sort key putting scene2 before scene10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def raise_problems(what: str, problems: Sequence[str]) -> None:
    """One LayoutError listing every problem found (the first MAX_LISTED_PROBLEMS of them), if any."""
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED_PROBLEMS])
        more = f"\n  ... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise LayoutError(f"{what}: {len(problems)} problem(s):\n  {listed}{more}")
