"""The session report (`<session>/index.html`, pipelines.report) in a real headless browser: a 3-turn NVS
session and a 3-segment long edit with tiny random models (run once each, through the Python API, and
shared by the checks), their pages loaded from disk by Chromium, the rendered DOM compared with the
turn records, and every video on the page played from its relative link."""

import json
import logging
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_sample import assets  # noqa: F401 (the tiny random models and videos, a fixture)

from mv2v_jax.config import load_config
from mv2v_jax.io.video import read_all_frames, read_video
from mv2v_jax.pipelines.presets import preset_trajectory
from mv2v_jax.pipelines.report import REPORT
from mv2v_jax.pipelines.session import Session, SourceVideo, TurnFiles
from mv2v_jax.pipelines.turns import Turn
from mv2v_jax.retrieval.bank import MemoryEntry

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
PROMPT = '<b>a "sunny" room</b> & more'  # record text the page must show as text, not markup
SCORES = ("score", "overlap", "containment")  # VideoFOV's, as the memory table shows them
MIN_SCORE = 0.7  # pan_right overlaps pan_left by about 0.6 (VideoFOV): skipped; pan_left itself by 1: fed


class Element:
    """An element of a parsed page: its tag, attributes and children (elements and text)."""

    def __init__(self, tag: str, attrs: dict[str, str]):
        self.tag, self.attrs, self.children = tag, attrs, []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def all(self, tag: str, cls: str | None = None) -> list["Element"]:
        """Every descendant `tag` (with the class `cls`), in document order."""
        found = []
        for child in self.children:
            if isinstance(child, Element):
                if child.tag == tag and (cls is None or cls in child.classes):
                    found.append(child)
                found += child.all(tag, cls)
        return found

    def one(self, tag: str, cls: str | None = None) -> "Element":
        found = self.all(tag, cls)
        assert len(found) == 1, (tag, cls, len(found))
        return found[0]

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)


class Page(HTMLParser):
    """The DOM Chromium dumps, as `Element`s."""

    VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "source"})

    def __init__(self, dom: str):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_endtag(self, tag):
        while len(self.stack) > 1 and self.stack.pop().tag != tag:
            pass

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def chromium(profile: Path, *args: str) -> str:
    """Headless Chromium, offline, with its own profile folder; its stdout."""
    if CHROMIUM is None:
        pytest.fail("the report tests need a headless Chromium: apt-get install chromium (.ci/run installs it)")
    offline = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    result = subprocess.run([CHROMIUM, *offline, *args], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def rendered(session: Path, profile: Path) -> Element:
    """The session's report as Chromium renders it from disk."""
    return Page(chromium(profile, "--dump-dom", (session / REPORT).resolve().as_uri())).root


# Appended to a copy of the page: once every video has its first frame (or failed), their sizes and durations.
PROBE = """<script>
const videos = [...document.querySelectorAll("video")];
const ready = v => v.readyState >= 2 ? null : new Promise(r => { v.onloadeddata = r; v.onerror = r; });
Promise.all(videos.map(ready)).then(() => { document.body.dataset.videos = JSON.stringify(
  videos.map(v => [v.getAttribute("src"), v.videoWidth, v.videoHeight, v.duration])); });
</script>"""


def played(session: Path, profile: Path) -> list:
    """`[src, width, height, seconds]` of every video of the report, as Chromium decoded them."""
    probe = session / "probe.html"
    probe.write_text((session / REPORT).read_text().replace("</body>", PROBE + "</body>"))
    try:
        page = Page(chromium(profile, "--virtual-time-budget=20000", "--dump-dom", probe.resolve().as_uri())).root
    finally:
        probe.unlink()
    return json.loads(page.one("body").attrs["data-videos"])


def tiny_sample(assets: Path, task: str):  # noqa: F811
    """The `sample` section sample.py runs in tests/test_sample.py, with the tiny random models."""
    sample = load_config("tiny_nvs.py").sample
    sample.weights = str(assets / f"{task}_weights")
    sample.video.update(frames=9, height=32, width=48)
    sample.sampling.steps = 2
    sample.long_edit.segment_frames = 9
    sample.retrieval.update(slots=1, buckets=(1,), min_score=MIN_SCORE)  # one small program for every turn
    return sample


def si(text: str) -> float:
    """ "33.8 M" -> 33.8e6."""
    number, _, prefix = text.partition(" ")
    return float(number) * 10 ** (3 * " kMGTP".index(prefix or " "))


def records(session: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((session / "turns").glob("turn_*.json"))]


@pytest.fixture(scope="module")
def nvs_session(assets, tmp_path_factory):  # noqa: F811
    """Turns pan_left, pan_right (prompt PROMPT) and pan_left of one session."""
    from mv2v_jax.pipelines.build import build_pipeline, session_config

    sample = tiny_sample(assets, "nvs")
    pipeline = build_pipeline(sample, "nvs")
    path = tmp_path_factory.mktemp("report") / "room"
    source = SourceVideo.from_clip(read_video(assets / "source.mp4", 9, (32, 48)), "source.mp4")
    with Session.open(path, task="nvs", config=session_config(sample, "nvs"), source=source) as session:
        for camera, prompt in (("pan_left", ""), ("pan_right", PROMPT), ("pan_left", "")):
            pipeline.run_turn(session, Turn(cameras=preset_trajectory(camera, 9), camera=camera, prompt=prompt))
    return path


@pytest.fixture(scope="module")
def long_edit_session(assets, tmp_path_factory):  # noqa: F811
    """The 3 segments of a 27-frame video."""
    from mv2v_jax.pipelines.build import build_pipeline, session_config
    from mv2v_jax.pipelines.long_edit import segment_starts

    sample = tiny_sample(assets, "long_edit")
    pipeline = build_pipeline(sample, "long_edit")
    path = tmp_path_factory.mktemp("report") / "edit"
    source = SourceVideo.from_clip(read_all_frames(assets / "long.mp4", (32, 48)), "long.mp4")
    meta = {"segments": segment_starts(len(source.frames), 9)}
    with Session.open(
        path, task="long_edit", config=session_config(sample, "long_edit"), source=source, meta=meta
    ) as s:
        pipeline.run(s, prompt="winter")
    return path


def page_videos(made: list[dict], key: str, first: int = 0) -> list[str]:
    """The videos of the turns' sections in page order (the newest turn first): each turn's own, then its
    memories' (their turn is `memory[key] + first`)."""
    return [
        f"turns/turn_{n:03d}.mp4"
        for r in reversed(made)
        for n in (r["turn"], *(m[key] + first for m in r["retrieved"]))
    ]


def overview_of(page: Element) -> Element:
    return next(s for s in page.all("section") if s.attrs.get("id") == "overview")


def memory_rows(section: Element) -> list[list[str]]:
    """The memory table of a turn's section, cell texts per row ([] when nothing was fed)."""
    tables = section.all("table", "memory")
    return [[td.text() for td in tr.all("td")] for tr in tables[0].one("tbody").all("tr")] if tables else []


def test_report_shows_each_turn_with_its_video_cameras_and_memory(nvs_session, tmp_path):
    made = records(nvs_session)
    # What the page must show: turn 2 skips turn 1 (too little overlap), turn 3 retrieves and is fed turn 1
    # (one slot: the most overlapping memory only).
    assert [[m["turn"] for m in r["retrieved"]] for r in made] == [[], [], [1]]
    assert [[s["turn"] for s in r["skipped"]] for r in made] == [[], [1], []]
    page = rendered(nvs_session, tmp_path)
    sections = page.all("section", "turn")[::-1]  # the newest first on the page
    assert [s.attrs["id"] for s in sections] == ["turn-1", "turn-2", "turn-3"]
    for section, record in zip(sections, made, strict=True):
        n = record["turn"]
        assert section.one("h2").text() == f"Turn {n} · {record['camera']}"
        video = section.all("video")[0].attrs["src"]  # the turn's own, first; then its memories'
        assert video == f"turns/turn_{n:03d}.mp4" and (nvs_session / video).is_file()
        links = {a.text(): a.attrs["href"] for a in section.all("a")}
        assert links["record (JSON)"] == f"turns/turn_{n:03d}.json"
        assert json.loads((nvs_session / links["record (JSON)"]).read_text()) == record
        # The memory table: slot, turn, entry, scores and tokenizer of every memory fed, in rank order.
        fed = record["retrieved"]
        expected = [
            [str(m["slot"]), f"turn {m['turn']}", m["entry"], *(f"{m[k]:.3f}" for k in SCORES), m["tokenizer"]]
            for m in fed
        ]
        assert memory_rows(section) == expected
        assert [v.attrs["src"] for v in section.all("video")[1:]] == [f"turns/turn_{m['turn']:03d}.mp4" for m in fed]
        skipped = section.all("table", "skipped")
        shown = [[td.text() for td in tr.all("td")] for tr in skipped[0].one("tbody").all("tr")] if skipped else []
        assert shown == [[f"turn {s['turn']}", s["entry"], f"{s['score']:.3f}", s["reason"]] for s in record["skipped"]]
        facts = {tr.one("th").text(): tr.one("td").text() for tr in section.one("table", "facts").all("tr")}
        tokens = record["tokens"]
        assert facts["tokens"] == f"target {tokens['target']} · memory {tokens['memory']} · padding {tokens['padding']}"
        assert facts["prompt"] == (record["prompt"] or "none")
        total, forwards, each = re.fullmatch(r"(.+) \((\d+) forwards of (.+)\)", facts["FLOPs"]).groups()
        assert int(forwards) == record["forwards"]
        assert si(total) == pytest.approx(record["flops"], rel=5e-3)
        assert si(each) == pytest.approx(record["flops_per_forward"], rel=5e-3)
        stages = {
            tr.all("td")[0].text(): tr.all("td")[1].text()
            for tr in section.one("table", "timings").one("tbody").all("tr")
        }
        assert stages["total"] == f"{sum(record['seconds'].values()):.2f}"
    assert made[1]["prompt"] == PROMPT and not sections[1].one("table", "facts").all("b")  # markup as text
    # Turn 3's camera plot: the source and the three paths, turn 3 bold, turn 1 (fed) in colour, turn 2 grey.
    plot = sections[2].one("svg", "cameras")
    assert len(plot.all("path", "source")) == 1
    paths = {g.attrs["data-turn"]: g for g in plot.all("g", "camera")}
    assert {n: sorted(g.classes) for n, g in paths.items()} == {
        "1": ["camera", "fed"],
        "2": ["camera", "earlier"],
        "3": ["camera", "current"],
    }
    assert all(len(g.all("path", "track")) == 1 for g in paths.values())
    # Seen from above, pan_left ends looking left of the source camera and pan_right right of it.
    apex = float(plot.one("path", "source").attrs["d"][1:].split(" ")[0].split(",")[0])
    ends = {n: float(g.one("circle").attrs["cx"]) for n, g in paths.items()}
    assert ends["1"] < apex < ends["2"] and ends["3"] == pytest.approx(ends["1"])
    # Earlier turns' plots show only the turns up to them; the overview shows every turn.
    assert [sorted(g.attrs["data-turn"] for g in s.one("svg").all("g", "camera")) for s in sections] == [
        ["1"],
        ["1", "2"],
        ["1", "2", "3"],
    ]
    overview = overview_of(page).one("svg", "cameras")
    assert sorted(g.attrs["data-turn"] for g in overview.all("g", "camera")) == ["1", "2", "3"]
    summary = [[td.text() for td in tr.all("td")] for tr in page.one("table", "summary").one("tbody").all("tr")]
    assert [row[:4] for row in summary] == [
        ["turn 1", "pan_left", "none", "0"],
        ["turn 2", "pan_right", "none", "1"],
        ["turn 3", "pan_left", "turn 1", "0"],
    ]


def test_report_videos_play_from_disk(nvs_session, tmp_path):
    """Every video of the page loads from its relative link and decodes in the browser."""
    videos = played(nvs_session, tmp_path)
    assert [src for src, *_ in videos] == page_videos(records(nvs_session), "turn")
    assert all((w, h) == (48, 32) and seconds == pytest.approx(9 / 8, abs=0.05) for _, w, h, seconds in videos)


def test_report_of_a_long_edit_shows_its_segments_and_what_each_retrieved(long_edit_session, tmp_path):
    made = records(long_edit_session)
    page = rendered(long_edit_session, tmp_path)
    sections = page.all("section", "turn")[::-1]
    assert [s.one("h2").text() for s in sections] == [f"Segment {i} · frames {9 * i}–{9 * i + 8}" for i in range(3)]
    for section, record in zip(sections, made, strict=True):
        expected = [
            [str(m["slot"]), f"segment {m['segment']}", m["entry"], f"{m['similarity']:.3f}", m["tokenizer"]]
            for m in record["retrieved"]
        ]
        assert memory_rows(section) == expected
        timeline = section.one("svg", "segments")
        assert [r.attrs["data-segment"] for r in timeline.all("rect", "segment")] == ["0", "1", "2"]
        assert timeline.one("rect", "current").attrs["data-segment"] == str(record["segment"])
        arcs = [(a.attrs["data-segment"], a.attrs["data-memory"]) for a in timeline.all("path", "retrieval")]
        assert arcs == [(str(record["segment"]), str(m["segment"])) for m in record["retrieved"]]
    assert made[2]["retrieved"][0]["segment"] == 1  # the previous segment first, as fed
    overview = overview_of(page)
    assert overview.all("video")[0].attrs["src"] == "edited.mp4"
    arcs = {(a.attrs["data-segment"], a.attrs["data-memory"]) for a in overview.one("svg").all("path", "retrieval")}
    assert arcs == {(str(r["segment"]), str(m["segment"])) for r in made for m in r["retrieved"]}
    videos = played(long_edit_session, tmp_path)
    assert [src for src, *_ in videos] == ["edited.mp4", *page_videos(made, "segment", 1)]
    assert videos[0][1:3] == [48, 32] and videos[0][3] == pytest.approx(27 / 8, abs=0.05)


def test_report_that_cannot_be_written_loses_no_turn(tmp_path, monkeypatch, caplog):
    """A turn whose report fails is committed whole, with a warning; the next open writes the report."""
    import mv2v_jax.pipelines.session as session_module

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    frames = np.random.default_rng(0).integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)
    path, config = tmp_path / "session", {"task": "nvs", "video": {"frames": 9}}
    monkeypatch.setattr(session_module, "write_report", fail)
    with (
        caplog.at_level(logging.WARNING),
        Session.open(path, task="nvs", config=config, source=SourceVideo.from_frames(frames, "v.mp4")) as session,
    ):
        entry = MemoryEntry(
            latents=np.zeros((3, 8, 12, 4), np.float32), turn=1, cameras=np.tile(np.eye(3, 4), (3, 1, 1))
        )
        files = TurnFiles(video=frames, fps=8, sheet=[frames], labels=["turn 1"])
        record = session.commit_turn(entry, files, {"turn": 1, "seed": 0})
    assert record["turn"] == 1 and all(Path(p).exists() for p in record["files"].values())
    assert not (path / REPORT).exists()
    assert f"could not write its report {REPORT} (OSError: [Errno 28] No space left on device)" in caplog.text
    monkeypatch.undo()
    Session.open(path, task="nvs", config=config).close()
    page = (path / REPORT).read_text()
    assert 'id="turn-1"' in page and 'src="turns/turn_001.mp4"' in page
