"""Config values that make no sense are refused by the config dataclasses, naming the key as a user
writes it; the shipped config's values are accepted."""

import math

import pytest

from mv2v_jax.config import ConfigValueError, dataclass_from_config, load_config
from mv2v_jax.data.memory_sampling import MemorySampling
from mv2v_jax.io.video import VideoConfig
from mv2v_jax.memory.merging import MergeConfig
from mv2v_jax.memory.model import MemoryConfig
from mv2v_jax.pipelines.build import check_sample_config
from mv2v_jax.pipelines.denoiser import SamplingConfig

VIDEO = dict(frames=9, height=48, width=72, fps=8)
BAD = [
    (SamplingConfig, {}, "steps", [0, -3, 1001, 10**6]),
    (SamplingConfig, {}, "shift", [0.0, -1.0, math.nan, math.inf]),
    (SamplingConfig, {}, "guidance", [-0.5, math.nan, math.inf]),
    (SamplingConfig, {}, "keep_ratio", [0.0, -0.1, 1.01, 2.0, math.nan]),
    (MergeConfig, {}, "keep_ratio", [0.0, 2.0, math.nan]),
    (MergeConfig, {}, "fraction", [-0.1, 1.5, math.nan]),
    (MergeConfig, {}, "blocks", [(10, -1)]),
    (MergeConfig, {}, "kernel", [0, -3]),
    (VideoConfig, VIDEO, "frames", [0, 8, 10, -3]),
    (VideoConfig, VIDEO, "height", [0, -48]),
    (VideoConfig, VIDEO, "width", [0, -72]),
    (VideoConfig, VIDEO, "fps", [0, -8.0, math.nan, math.inf]),
    (MemorySampling, {}, "slots", [0]),
    (MemorySampling, {}, "min_memory", [-1]),
    (MemorySampling, {}, "max_memory", [0, 7]),
    (MemorySampling, {}, "merge_prob", [-0.1, 1.5, math.nan]),
    (MemorySampling, {}, "uniform_tokenizer_prob", [2.0]),
    (MemorySampling, {}, "merge_ratios", [(), (0.5, 0.0), (1.5,)]),
    (MemorySampling, {}, "fov_radius", [0.0, math.nan]),
]


@pytest.mark.parametrize(
    "cls, base, key, value",
    [(cls, base, key, value) for cls, base, key, values in BAD for value in values],
    ids=lambda v: getattr(v, "__name__", repr(v)) if not isinstance(v, dict) else "",
)
def test_a_value_that_makes_no_sense_is_refused_naming_the_key(cls, base, key, value):
    with pytest.raises(ConfigValueError, match=rf"^{key}={value!r}: ".replace("(", r"\(").replace(")", r"\)")):
        cls(**base | {key: value})
    with pytest.raises(ConfigValueError, match=rf"^section\.{key}=") as raised:
        dataclass_from_config(cls, base | {key: value}, "section")
    assert raised.value.key == f"section.{key}"


def test_the_edges_of_each_range_are_accepted():
    SamplingConfig(steps=1, keep_ratio=1.0, guidance=0.0)
    SamplingConfig(steps=1000, keep_ratio=None)
    MergeConfig(keep_ratio=1.0, fraction=0.0, blocks=())
    VideoConfig(frames=1, height=1, width=1, fps=0.5)
    MemorySampling(min_memory=0, max_memory=6, merge_prob=1.0, merge_ratios=(1.0,))


def test_nested_sections_are_named_by_their_path():
    with pytest.raises(ConfigValueError, match=r"^model\.merge\.keep_ratio=2\.0: "):
        MemoryConfig.from_config({"dit": {"dim": 32, "num_heads": 2, "num_layers": 2}, "merge": {"keep_ratio": 2.0}})


def test_the_shipped_config_passes_and_a_bad_sample_value_is_named():
    sample = load_config("configs/tiny_nvs.py").sample
    check_sample_config(sample)
    sample.video.fps = 0
    with pytest.raises(ConfigValueError, match=r"^sample\.video\.fps=0: "):
        check_sample_config(sample)


@pytest.mark.parametrize(
    "text, where, message",
    [
        (
            "caf\udce9",
            "--prompt",
            r"^--prompt: not valid UTF-8 text \(the byte 0xe9 at character 3\); give it as UTF-8$",
        ),
        (
            "a\ud800b",
            "t.json: turn 2 'prompt'",
            r"^t\.json: turn 2 'prompt': not valid UTF-8 text \(a lone surrogate "
            r"U\+D800 at character 1\)",
        ),
    ],
)
def test_text_that_is_not_unicode_is_named_with_where_it_came_from(text, where, message):
    from mv2v_jax.config import check_text

    with pytest.raises(ValueError, match=message):
        check_text(text, where)
    assert check_text("café 東京", "--prompt") == "café 東京"


def test_counts_on_the_command_line_are_refused_naming_the_flag(capsys):
    from mv2v_jax.config import ArgumentParser, int_at_least

    parser = ArgumentParser(prog="tool")
    parser.add_argument("--scenes", type=int_at_least(1))
    assert parser.parse_args(["--scenes", "1"]).scenes == 1
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--scenes", bad])
        assert exit_info.value.code == 2
        line = f"error: argument --scenes: {bad!r} is not an integer >= 1 (--help shows the usage)\n"
        assert capsys.readouterr().err == line
