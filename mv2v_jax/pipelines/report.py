"""A session's report: `<session>/index.html`, one static page of everything its turns did.

The session writes it again after every committed turn (`Session.write_report`), atomically, from its
bank entries (each carries its turn record and, for NVS, its cameras). Under an overview (a table of
the turns, every camera path or the segments), the turns newest first, each (a segment of a long
edit) with its video, what memory it was fed (scores, tokenizers, the memories' own videos) and what it
skipped and why, tokens, FLOPs, timings, and links to its JSON record and contact sheet. An NVS turn
has a top view of its camera path beside the source camera and the earlier turns' paths (those fed
to it in colour, the others grey); a long edit shows its segments on the video's timeline, each with
the segments it retrieved, and the whole edited video once it exists.

The page is plain HTML with inline CSS and inline SVG drawn here from the camera poses: no script, no
network; every link is relative (the videos under turns/), so it opens from disk (file://) and the
session folder can be moved or copied whole. Every text from a record is escaped.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mv2v_jax.io.atomic import atomic_output

REPORT = "index.html"
# Turn colours (Tableau 10), by turn number; earlier turns that were not fed are grey.
COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
GREY = "#b9bec6"
PLOT = (380, 300)  # camera plot, pixels
TIMELINE_WIDTH = 480  # a long edit's segments, pixels
VIDEO_WIDTH, THUMB_WIDTH = 384, 150  # the most pixels a turn's video and a memory's are shown at

CSS = """
:root { --ink: #1d2330; --muted: #667085; --line: #e4e7ec; --panel: #f7f8fa; --accent: #4e79a7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink);
  background: #fff; }
header { padding: 20px 32px 14px; background: #1d2330; color: #fff; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #c9ced8; }
header code { color: #fff; }
main { padding: 8px 32px 32px; max-width: 1400px; }
h2 { margin: 0 0 10px; font-size: 18px; font-weight: 600; }
h2 .tag { font-weight: 400; color: var(--muted); }
h3 { margin: 14px 0 6px; font-size: 13px; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); }
section { border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px; margin: 18px 0;
  background: #fff; }
.row { display: flex; flex-wrap: wrap; gap: 20px; align-items: flex-start; }
.row > div { flex: 1 1 300px; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
video { display: block; background: #000; border-radius: 4px; max-width: 100%; height: auto; }
video.pixels { image-rendering: pixelated; }
video::-webkit-media-controls-panel { opacity: 0; transition: opacity .2s; }
video:hover::-webkit-media-controls-panel { opacity: 1; }
a { color: var(--accent); }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px 3px 0; text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); }
th { font-weight: 600; color: var(--muted); font-size: 12px; }
td.num, th.num { text-align: right; }
.facts th { border: 0; padding-right: 14px; white-space: nowrap; }
.facts td { border: 0; }
.bar { display: inline-block; height: 8px; background: var(--accent); border-radius: 2px; vertical-align: middle;
  margin-left: 6px; opacity: .7; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px;
  vertical-align: baseline; }
.none { color: var(--muted); font-style: italic; }
.memories { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.memories figure { max-width: 160px; }
.legend { font-size: 12px; color: var(--muted); margin-top: 4px; max-width: 380px; }
.legend span { margin-right: 12px; }
svg { background: var(--panel); border-radius: 6px; display: block; max-width: 100%; height: auto; }
table.summary td { white-space: nowrap; }
svg text { font: 11px system-ui, sans-serif; fill: #475467; }
footer { color: var(--muted); font-size: 12px; padding: 0 32px 24px; }
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportTurn:
    """One committed turn as the report shows it: its record, its files relative to the session folder
    (video, contact_sheet, record) and, for NVS, its cameras (w2c `[T, 3, 4]`, the latent frames')."""

    record: Mapping[str, Any]
    files: Mapping[str, str]
    cameras: np.ndarray | None = None

    @property
    def number(self) -> int:
        return int(self.record.get("turn", 0))


class Html(str):
    """Markup made here (not escaped again); any other text put on the page is escaped."""


def _text(value: Any) -> Html:
    return value if isinstance(value, Html) else Html(html.escape(str(value)))


def _join(parts: Iterable[Any]) -> Html:
    return Html("".join(_text(p) for p in parts))


def _tag(name: str, content: Any = "", **attributes: Any) -> Html:
    """`<name attributes>content</name>`; `class_` is `class`, `data_x` is `data-x`, None drops an attribute."""
    names = {k: k.rstrip("_").replace("_", "-") for k in attributes}
    attrs = "".join(f' {names[k]}="{html.escape(str(v))}"' for k, v in attributes.items() if v is not None)
    return Html(f"<{name}{attrs}>{_text(content)}</{name}>")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = (), **attrs) -> Html:
    """A table; the columns in `numeric` are right-aligned."""
    cls = lambda i: "num" if i in numeric else None
    head = _tag("tr", _join(_tag("th", h, class_=cls(i)) for i, h in enumerate(headers)))
    body = _join(_tag("tr", _join(_tag("td", c, class_=cls(i)) for i, c in enumerate(row))) for row in rows)
    return _tag("table", _join([_tag("thead", head), _tag("tbody", body)]), **attrs)


def _si(value: float) -> str:
    """6.83e9 -> "6.83 G"."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}"
    return f"{value:.3g}"


def colour(turn: int) -> str:
    return COLOURS[(turn - 1) % len(COLOURS)]


def _video(src: str, width: int, size: Mapping[str, Any], controls: bool = True) -> Html:
    """A looping muted video, playing, shown at the largest whole multiple of its size that fits `width`
    (crisp pixels when enlarged), or at `width` when it is wider."""
    native = int(size.get("width") or 0)
    scale = width // native if 0 < native <= width else 0
    return _tag(
        "video",
        "",
        src=src,
        width=native * scale if scale else width,
        class_="pixels" if scale > 1 else None,
        controls="" if controls else None,
        loop="",
        muted="",
        autoplay="",
        playsinline="",
        preload="auto",
    )


# -- the camera plot (NVS) -----------------------------------------------------------------------------


def _top_view(cameras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w2c `[T, 3, 4]` (OpenCV axes, y down) -> camera centres and unit viewing directions `[T, 2]` seen
    from above, as (x, z): x to the right, z (forward from the source camera) up the page."""
    rotation, translation = cameras[:, :, :3], cameras[:, :, 3]
    centres = -np.einsum("tji,tj->ti", rotation, translation)[:, [0, 2]]
    forward = rotation[:, 2, [0, 2]]  # the camera's z axis in the world
    length = np.linalg.norm(forward, axis=-1, keepdims=True)
    return centres, np.divide(forward, length, out=np.zeros_like(forward), where=length > 1e-9)


def _nice_step(span: float) -> float:
    """A round grid step (1, 2 or 5 times a power of ten) of about a quarter of `span`."""
    raw = max(span / 4, 1e-9)
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


class _Canvas:
    """Top-view coordinates (x, z) -> SVG pixels of a `size` plot: x to the right, z up, `points` fitted
    in with a margin at one scale on both axes."""

    def __init__(self, points: np.ndarray, size: tuple[int, int]):
        low, high = points.min(0), points.max(0)
        margin = 0.12 * max(float((high - low).max()), 1e-6)
        self.low, self.high = low - margin, high + margin
        self.scale = min(size[0] / (self.high[0] - self.low[0]), size[1] / (self.high[1] - self.low[1]))
        middle = (self.low + self.high) / 2
        self.offset = np.array(size) / 2 - self.scale * np.array([middle[0], -middle[1]])

    def xy(self, point: Sequence[float]) -> tuple[float, float]:
        x, y = self.offset + self.scale * np.array([point[0], -point[1]])
        return round(float(x), 1), round(float(y), 1)

    def line(self, points: Iterable[Sequence[float]], closed: bool = False) -> str:
        """An SVG path through `points`."""
        return "M" + " L".join("{},{}".format(*self.xy(p)) for p in points) + (" Z" if closed else "")

    def grid(self, step: float) -> str:
        """Grid lines every `step` scene units."""
        (x0, z0), (x1, z1) = self.low, self.high
        xs = np.arange(math.ceil(x0 / step), math.floor(x1 / step) + 1) * step
        zs = np.arange(math.ceil(z0 / step), math.floor(z1 / step) + 1) * step
        return " ".join([*(self.line([(x, z0), (x, z1)]) for x in xs), *(self.line([(x0, z), (x1, z)]) for z in zs)])


def camera_plot(turns: Sequence[ReportTurn], current: int | None, fed: Iterable[int], hfov_degrees: float) -> Html:
    """Top view of the source camera and the paths of the turns up to `current` (a turn number; None:
    every turn, each in its colour), fitted to what it shows: a path through each turn's
    camera centres, a ray along each camera's viewing direction and the arc the rays' ends trace (what
    a rotation about a fixed centre shows). The `current` turn is drawn bold, those `fed` to it in
    their colour, the other earlier ones grey."""
    views = {
        t.number: _top_view(np.asarray(t.cameras, np.float64))
        for t in turns
        if t.cameras is not None and (current is None or t.number <= current)
    }
    centres = np.concatenate([np.zeros((1, 2)), *(c for c, _ in views.values())])
    ray = max(0.3 * float(np.ptp(centres, axis=0).max()), 0.5)  # scene units: pure rotations get half a metre
    half = math.radians(min(hfov_degrees, 170.0)) / 2
    wedge = 0.6 * ray * math.cos(half) * np.array([[0.0, 0.0], [-math.tan(half), 1.0], [math.tan(half), 1.0]])
    canvas = _Canvas(np.concatenate([centres, wedge, *(c + ray * f for c, f in views.values())]), PLOT)
    width, height = PLOT
    step = _nice_step(float((canvas.high - canvas.low).max()))
    source_label = canvas.xy(wedge[0])
    parts = [
        _tag("path", d=canvas.grid(step), stroke="#e4e7ec"),
        _tag("path", d=f"M10,{height - 10} h{step * canvas.scale:.1f}", stroke="#475467", stroke_width=2),
        _tag("text", f"{step:g} m", x=10, y=height - 15),
        _tag(
            "path",
            _tag("title", "the source video's first camera (the session's world frame)"),
            class_="source",
            d=canvas.line(wedge, closed=True),
            fill="#1d2330",
            fill_opacity=0.1,
            stroke="#1d2330",
            stroke_width=1.5,
        ),
        _tag("text", "source", x=source_label[0], y=source_label[1] + 15, text_anchor="middle"),
    ]
    fed = set(fed)
    for n in sorted(views, key=lambda n: (n == current, n in fed or current is None, n)):  # grey first, current last
        state = "current" if n == current else "fed" if n in fed or current is None else "earlier"
        parts.append(_camera_path(canvas, views[n], ray, n, state, next(t for t in turns if t.number == n)))
    title = "every turn" if current is None else f"turn {current}"
    return _svg(parts, "cameras", width, height, f"top view of the camera paths, {title}")


def _camera_path(
    canvas: _Canvas, view: tuple[np.ndarray, np.ndarray], ray: float, n: int, state: str, turn: ReportTurn
) -> Html:
    """Turn `n`'s cameras (`view`: their centres and directions from above) drawn as its `state` says."""
    centres, forward = view
    ends = centres + ray * forward
    stroke = GREY if state == "earlier" else colour(n)
    weight = {"current": 3.0, "fed": 2.0, "earlier": 1.5}[state]
    label = canvas.xy(ends[-1] + 0.1 * ray * (forward[-1] if np.any(forward[-1]) else np.array([0.0, 1.0])))
    end = canvas.xy(ends[-1])
    rays = " ".join(canvas.line([a, b]) for a, b in zip(centres, ends, strict=True))
    content = [
        _tag("title", f"turn {n}: {turn.record.get('camera', '')}"),
        _tag("path", d=rays, stroke=stroke, stroke_width=weight / 3, stroke_opacity=0.7),
        _tag("path", d=canvas.line(ends), stroke=stroke, stroke_width=weight / 2, stroke_dasharray="4 3"),
        _tag("path", class_="track", d=canvas.line(centres), stroke=stroke, stroke_width=weight + 1.5),
        _tag("circle", cx=end[0], cy=end[1], r=weight, fill=stroke),
        _tag("text", n, x=label[0], y=label[1] + 4, text_anchor="middle", style=f"fill:{stroke};font-weight:600"),
    ]
    return _tag(
        "g",
        _join(content),
        class_=f"camera {state}",
        data_turn=n,
        stroke_linecap="round",
        stroke_linejoin="round",
    )


# -- the segments of a long edit -----------------------------------------------------------------------


def segment_timeline(
    turns: Sequence[ReportTurn], starts: Sequence[int], frames: int, current: int | None = None
) -> Html:
    """The long video's frames with its segments (numbered from 0) as boxes, and an arc from each segment
    to every segment it retrieved (thicker: more similar); `current` (a segment): only its arcs, the
    segments it retrieved in colour and the others grey."""
    width, pad, arc_height, box = TIMELINE_WIDTH, 12, 80, 26
    height = arc_height + box + 30
    length = frames - starts[-1] if len(starts) else 0  # the last segment ends at the video's end
    x = lambda frame: pad + (width - 2 * pad) * frame / max(frames, 1)
    middle = lambda i: (x(starts[i]) + x(starts[i] + length)) / 2
    records = {int(t.record.get("segment", t.number - 1)): t.record for t in turns}
    shown = [current] if current is not None else sorted(records)
    fed = {int(m["segment"]) for i in shown for m in records.get(i, {}).get("retrieved", [])}
    parts = []
    for i, start in enumerate(starts):
        done = i in records
        state = "current" if i == current else "fed" if current is None or i in fed else "other"
        fill = colour(i + 1) if done and state != "other" else GREY if done else "#fff"
        parts.append(
            _tag(
                "rect",
                _tag("title", f"segment {i}: frames {start}-{start + length - 1}" + ("" if done else " (not yet)")),
                class_=f"segment {state}",
                data_segment=i,
                x=round(x(start) + 1, 1),
                y=arc_height,
                width=round(x(start + length) - x(start) - 2, 1),
                height=box,
                rx=3,
                fill=fill,
                fill_opacity=0.85 if state != "other" else 0.5,
                stroke="#1d2330" if state == "current" else GREY,
                stroke_width=2.5 if state == "current" else 1,
            )
        )
        parts.append(_tag("text", i, x=round(middle(i), 1), y=arc_height + 16, text_anchor="middle"))
    for i in shown:
        for memory in records.get(i, {}).get("retrieved", []):
            j, similarity = int(memory["segment"]), float(memory.get("similarity", 0.0))
            a, b = middle(i), middle(j)
            rise = min(arc_height - 6, 14 + abs(a - b) * 0.35)
            parts.append(
                _tag(
                    "path",
                    _tag("title", f"segment {i} was fed segment {j} (similarity {similarity:.3f})"),
                    class_="retrieval",
                    data_segment=i,
                    data_memory=j,
                    d=f"M{a:.1f},{arc_height} Q{(a + b) / 2:.1f},{arc_height - 2 * rise:.1f} {b:.1f},{arc_height}",
                    stroke=colour(i + 1),
                    stroke_width=round(1 + 2.5 * max(similarity, 0.0), 2),
                    stroke_opacity=0.8,
                )
            )
    axis = arc_height + box + 18
    parts += [
        _tag("text", "frame 0", x=pad, y=axis),
        _tag("text", f"frame {frames - 1}", x=width - pad, y=axis, text_anchor="end"),
    ]
    return _svg(parts, "segments", width, height, "the long video's segments and what each retrieved")


def _svg(parts: list[str], kind: str, width: float, height: float, label: str) -> str:
    """An inline SVG drawing of class `kind` from its `parts`, described by `label` for screen readers."""
    return _tag(
        "svg",
        _join(parts),
        class_=kind,
        width=width,
        height=height,
        viewBox=f"0 0 {width} {height}",
        xmlns="http://www.w3.org/2000/svg",
        role="img",
        aria_label=label,
        fill="none",
    )


# -- the page ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Kind:
    """How a task's session is shown: its title, what a turn is called, the key naming a memory's turn in
    the records and what to add to it for the turn number (segments count from 0), and the retrieval
    scores the records hold (key, heading; the first is the one `min_score` applies to)."""

    title: str
    noun: str
    key: str
    first: int
    scores: tuple[tuple[str, str], ...]


VIDEO_FOV = (("score", "VideoFOV score"), ("overlap", "overlap"), ("containment", "containment"))
KINDS = {
    "nvs": _Kind("novel view synthesis", "turn", "turn", 0, VIDEO_FOV),
    "long_edit": _Kind("long video editing", "segment", "segment", 1, (("similarity", "similarity"),)),
}


def _name(kind: _Kind, number: int) -> str:
    """'turn 3', or 'segment 2' for turn 3 of a long edit."""
    return f"{kind.noun} {number - kind.first}"


def _link(kind: _Kind, number: int) -> Html:
    """A link to turn `number`'s section, with its colour."""
    swatch = _tag("span", "", class_="swatch", style=f"background:{colour(number)}")
    return _tag("a", _join([swatch, _name(kind, number)]), href=f"#turn-{number}")


def _number(kind: _Kind, memory: Mapping[str, Any]) -> int:
    return int(memory[kind.key]) + kind.first


def _score(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "?"


def _facts(record: Mapping[str, Any]) -> Html:
    """The turn's settings and costs, one row each (what the record has of them)."""
    rows: list[tuple[str, Any]] = [
        ("prompt", record.get("prompt") or Html('<span class="none">none</span>')),
        ("seed", record.get("seed", "?")),
    ]
    if sampling := record.get("sampling"):
        rows.append(
            (
                "sampling",
                f"{sampling.get('sampler')} · {sampling.get('steps')} steps · guidance {sampling.get('guidance')} · "
                f"shift {sampling.get('shift')}",
            )
        )
    if (cache := record.get("cache", {})).get("kind", "none") != "none":
        rows.append(("step cache", f"{cache['kind']}, threshold {cache.get('threshold')}"))
    if tokens := record.get("tokens"):
        rows.append(
            (
                "tokens",
                f"target {tokens.get('target')} · memory {tokens.get('memory')} · padding {tokens.get('padding')}",
            )
        )
        rows.append(("tokens per block", ", ".join(map(str, tokens.get("per_block", [])))))
    if "flops" in record:
        forwards = record.get("forwards", 0)
        rows.append(
            ("FLOPs", f"{_si(record['flops'])} ({forwards} forwards of {_si(record.get('flops_per_forward', 0))})")
        )
        reuse = {k: record.get(k, 0) for k in ("cached_forwards", "steps_skipped", "uncond_reused")}
        if any(reuse.values()):
            rows.append(("step cache", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in reuse.items())))
    if "compiled_this_turn" in record:
        how = "compiled this turn" if record["compiled_this_turn"] else "reused (compiled earlier or cached)"
        rows.append(("program", f"{how}; {record.get('compilations', '?')} compiled in this process"))
    if mesh := record.get("mesh"):
        rows.append(("mesh", ", ".join(f"{axis}={n}" for axis, n in mesh.items())))
    body = _join(_tag("tr", _join([_tag("th", k), _tag("td", v)])) for k, v in rows)
    return _tag("table", body, class_="facts")


def _timings(seconds: Mapping[str, float]) -> Html:
    """Seconds per stage, with bars, and their total."""
    longest = max([*seconds.values(), 1e-9])
    rows = [
        (stage, f"{s:.2f}", _tag("span", "", class_="bar", style=f"width:{120 * s / longest:.0f}px"))
        for stage, s in seconds.items()
    ]
    rows.append((Html("<b>total</b>"), f"{sum(seconds.values()):.2f}", ""))
    return _table(["stage", "seconds", ""], rows, numeric=(1,), class_="timings")


def _memory(kind: _Kind, record: Mapping[str, Any], files: Mapping[int, Mapping[str, str]], size) -> Html:
    """What the turn was fed: a table (slot, which turn, its entry, scores, tokenizer) and their videos."""
    fed = record.get("retrieved", [])
    if not fed:
        why = f"the session's first {kind.noun}: nothing to remember" if record.get("turn") == 1 else "no memory fed"
        return _tag("p", why, class_="none")
    headers = ["slot", kind.noun, "entry", *(h for _, h in kind.scores), "tokenizer"]
    rows = [
        [
            m.get("slot"),
            _link(kind, _number(kind, m)),
            m.get("entry"),
            *(_score(m.get(k)) for k, _ in kind.scores),
            m.get("tokenizer", "?"),
        ]
        for m in fed
    ]
    figures = []
    for m in fed:
        number = _number(kind, m)
        caption = f"slot {m.get('slot')}: {_name(kind, number)}, {kind.scores[0][1]} {_score(m.get(kind.scores[0][0]))}"
        video = _video(files[number]["video"], THUMB_WIDTH, size, controls=False) if number in files else ""
        figures.append(_tag("figure", _join([video, _tag("figcaption", caption)])))
    numeric = range(3, 3 + len(kind.scores))
    table = _table(headers, rows, numeric=numeric, class_="memory")
    return _tag("div", _join([table, _join(figures)]), class_="memories")


def _skipped(kind: _Kind, record: Mapping[str, Any]) -> Html:
    skipped = record.get("skipped", [])
    if not skipped:
        return _tag("p", "nothing skipped", class_="none")
    key, heading = kind.scores[0]
    rows = [[_link(kind, _number(kind, s)), s.get("entry"), _score(s.get(key)), s.get("reason", "")] for s in skipped]
    return _table([kind.noun, "entry", heading, "why"], rows, numeric=(2,), class_="skipped")


def _legend(items: Sequence[tuple[str, str]]) -> Html:
    return _tag(
        "div",
        _join(_tag("span", _join([_tag("span", "", class_="swatch", style=f"background:{c}"), t])) for c, t in items),
        class_="legend",
    )


class _Page:
    """The report of one session: `meta` (session.json) and its turns."""

    def __init__(self, name: str, meta: Mapping[str, Any], turns: Sequence[ReportTurn], edited: str | None):
        self.name, self.meta, self.turns, self.edited = name, meta, sorted(turns, key=lambda t: t.number), edited
        self.task = str(meta.get("task", "nvs"))
        self.kind = KINDS[self.task]
        config = meta.get("config") or {}
        self.size = config.get("video") or {}
        self.hfov = float((config.get("retrieval") or {}).get("hfov_degrees", 60.0))
        self.files = {t.number: t.files for t in self.turns}
        source = meta.get("source") or {}
        self.frames = int(source.get("frames", 0))
        self.starts = list(meta.get("segments", []))

    def figure(self, current: int | None, record: Mapping[str, Any]) -> Html:
        """The turn's place among the others, with a legend: camera paths (NVS) or segments (long edit);
        `current` None: every turn."""
        fed = [_number(self.kind, m) for m in record.get("retrieved", [])]
        if self.task == "long_edit":
            drawing = segment_timeline(self.turns, self.starts, self.frames, None if current is None else current - 1)
        else:
            drawing = camera_plot(self.turns, current, fed, self.hfov)
        if current is None:
            items = [(colour(t.number), _name(self.kind, t.number)) for t in self.turns]
        else:
            items = [(colour(current), f"{_name(self.kind, current)} (this one)")]
            items += [(colour(n), f"{_name(self.kind, n)}: fed") for n in fed]
            shown = [t.number for t in self.turns if self.task == "long_edit" or t.number < current]
            if set(shown) - {current, *fed}:
                items.append((GREY, "not fed"))
        if self.task == "nvs":
            items.append(("#1d2330", "source camera"))
        return _join([drawing, _legend(items)])

    def detail(self, record: Mapping[str, Any]) -> str:
        """What the turn was: its camera (NVS) or its frames (a long edit's segment)."""
        if self.task == "nvs":
            return str(record.get("camera", ""))
        start = int(record.get("start_frame", 0))
        length = self.frames - self.starts[-1] if self.starts else 0  # the last segment ends at the video's end
        return f"frames {start}–{start + length - 1}"

    def title(self, turn: ReportTurn) -> Html:
        detail = self.detail(turn.record)
        tag = _tag("span", f" · {detail}", class_="tag") if detail else ""
        return _tag("h2", _join([_name(self.kind, turn.number).capitalize(), tag]))

    def turn(self, turn: ReportTurn) -> Html:
        record, files = turn.record, turn.files
        links = _join(
            [
                _tag("a", "record (JSON)", href=files.get("record")),
                " · ",
                _tag("a", "contact sheet", href=files.get("contact_sheet")),
            ]
        )
        video = _tag(
            "figure", _join([_video(files.get("video", ""), VIDEO_WIDTH, self.size), _tag("figcaption", links)])
        )
        timings = _timings(record.get("seconds", {}))
        row = _tag(
            "div",
            _join(
                [video, _tag("figure", self.figure(turn.number, record)), _tag("div", _join([_facts(record), timings]))]
            ),
            class_="row",
        )
        memory = _join([_tag("h3", "memory fed"), _memory(self.kind, record, self.files, self.size)])
        skipped = _join([_tag("h3", "retrieved, not fed"), _skipped(self.kind, record)])
        return _tag(
            "section",
            _join([self.title(turn), row, memory, skipped]),
            id=f"turn-{turn.number}",
            class_="turn",
        )

    def summary(self) -> Html:
        """One row per turn: what it was, what it was fed, what it cost."""
        rows = []
        for t in self.turns:
            r = t.record
            fed = Html(" ".join(_link(self.kind, _number(self.kind, m)) for m in r.get("retrieved", []))) or Html(
                '<span class="none">none</span>'
            )
            tokens = r.get("tokens", {})
            rows.append(
                [
                    _link(self.kind, t.number),
                    self.detail(r),
                    fed,
                    len(r.get("skipped", [])),
                    " + ".join(str(tokens[k]) for k in ("target", "memory") if tokens.get(k)),
                    _si(r.get("flops", 0)),
                    f"{sum(r.get('seconds', {}).values()):.1f}",
                ]
            )
        headers = [self.kind.noun, "camera" if self.task == "nvs" else "frames", "memory fed", "skipped"]
        return _table(
            [*headers, "tokens (target + memory)", "FLOPs", "seconds"], rows, numeric=(3, 4, 5, 6), class_="summary"
        )

    def overview(self) -> Html:
        parts = [_tag("figure", self.summary())]
        if self.edited:
            caption = _tag("figcaption", _join(["the whole edited video: ", _tag("a", self.edited, href=self.edited)]))
            parts.insert(0, _tag("figure", _join([_video(self.edited, VIDEO_WIDTH, self.size), caption])))
        if self.turns:
            parts.append(_tag("figure", self.figure(None, {})))
        return _tag("section", _join([_tag("h2", "Overview"), _tag("div", _join(parts), class_="row")]), id="overview")

    def render(self) -> str:
        source = self.meta.get("source") or {}
        weights = (self.meta.get("config") or {}).get("weights", "")
        count = len(self.turns)
        about = [
            f"{self.kind.title} · {count} {self.kind.noun}{'s' if count != 1 else ''}",
            Html(" · source "),
            _tag("code", source.get("video", "?")),
            f" ({self.frames} frames, sha256 {str(source.get('sha256', '?'))[:12]})",
        ]
        if weights:
            about += [Html(" · weights "), _tag("code", weights)]
        header = _tag("header", _join([_tag("h1", self.name), _tag("p", _join(about))]))
        body = _join([self.overview(), *(self.turn(t) for t in reversed(self.turns))])  # the newest first
        last = _name(self.kind, self.turns[-1].number) if self.turns else "none"
        footer = _tag(
            "footer",
            f"Written by mv2v-jax after every turn (the last: {last}). A static page: the videos and records are "
            "the files under turns/.",
        )
        head = _join(
            [
                Html('<meta charset="utf-8">'),
                Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
                _tag("title", f"{self.name}: {self.kind.title} session"),
                _tag("style", Html(CSS)),
            ]
        )
        page = _tag(
            "html", _join([_tag("head", head), _tag("body", _join([header, _tag("main", body), footer]))]), lang="en"
        )
        return "<!doctype html>\n" + page + "\n"


def render_report(name: str, meta: Mapping[str, Any], turns: Sequence[ReportTurn], *, edited: str | None = None) -> str:
    """The report page of the session `name` (its session.json `meta`) with `turns`; `edited`: the
    whole edited video of a long edit, relative to the session folder, once it exists."""
    return _Page(name, meta, turns, edited).render()


def write_report(
    path: str | Path, name: str, meta: Mapping[str, Any], turns: Sequence[ReportTurn], *, edited: str | None = None
) -> None:
    """Writes `render_report(...)` to `path` atomically (io.atomic)."""
    with atomic_output(path) as tmp:
        tmp.write_text(render_report(name, meta, turns, edited=edited), encoding="utf-8")
