"""BENCHMARKS.md sections (mv2v_jax.eval.benchmarks): a section is replaced in place, others are kept."""

from pathlib import Path

from mv2v_jax.eval.benchmarks import write_section


def test_a_section_is_replaced_and_the_others_kept(tmp_path: Path):
    path = tmp_path / "BENCHMARKS.md"
    write_section("First", "first body, old", path)
    write_section("Second", "second body", path)
    write_section("First", "first body, new", path)
    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert text.count("## First") == 1 and text.count("## Second") == 1
    assert "first body, new" in text and "first body, old" not in text and "second body" in text
    assert text.index("## First") < text.index("## Second")  # replaced where it was
    first = text[text.index("## First") : text.index("## Second")]
    assert "Command: `python " in first and "Machine: " in first and "JAX devices" in first
