"""Fuzzing the parsers with hypothesis: whatever a camera file, a config or a bank manifest holds, and
whatever arrays reach retrieval scoring, the only exceptions are the documented ones with a message
naming the input, and whatever is accepted is valid (rotations are rotations, scores are finite); and
valid camera files of every format are accepted, as the poses they hold.

Retrieval's contract, enforced here: non-finite cameras, intrinsics or embeddings and wrong shapes are
a ValueError naming the input; otherwise every score is finite (FOV scores in [0, 1], cosine
similarities in [-1, 1]). A NaN never becomes a score."""

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mv2v_jax.config import dataclass_from_config
from mv2v_jax.geometry import Intrinsics
from mv2v_jax.io.cameras import TRAJECTORY_FORMAT, CameraError, read_cameras, write_cameras
from mv2v_jax.memory.model import MemoryConfig
from mv2v_jax.models.wan.attention import AttentionConfig
from mv2v_jax.models.wan.dit import WanDiTConfig
from mv2v_jax.pipelines.denoiser import SamplingConfig
from mv2v_jax.retrieval.bank import BankError, MemoryBank, MemoryEntry
from mv2v_jax.retrieval.fov import fov_bitmask, fov_scores, num_words, retrieve_by_fov
from mv2v_jax.retrieval.similarity import cosine_similarity, segment_embedding, select_segments

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
FUZZ_JIT = settings(FUZZ, max_examples=60)  # each new shape compiles: fewer, smaller examples
VALID = settings(FUZZ, max_examples=100)  # valid inputs: the parse is checked, not hunted for a crash
GRID = (9, 18)  # a coarse VideoFOV grid keeps the fuzzed bitmasks cheap

numbers = st.one_of(
    st.integers(-3, 3),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2, 2),
    st.sampled_from([0.0, 1.0, -1.0, 1e308, -1e308, 1e-310]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


# -- camera files ----------------------------------------------------------------------------------


def matrix_lists(rows: int = 3):
    """Lists shaped like extrinsics [F, rows, 4] (sometimes ragged), of arbitrary numbers."""
    row = st.lists(numbers, min_size=3, max_size=5)
    return st.lists(st.lists(row, min_size=rows - 1, max_size=rows + 1), min_size=0, max_size=4)


@st.composite
def near_rotations(draw):
    """[F, 3, 4] poses: rotations, sometimes perturbed, scaled or with a non-finite entry."""
    frames = draw(st.integers(1, 4))
    angles = np.array(draw(st.lists(st.floats(-4, 4), min_size=3 * frames, max_size=3 * frames))).reshape(frames, 3)
    poses = np.zeros((frames, 3, 4))
    for f, (a, b, c) in enumerate(angles):
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
        poses[f, :, :3] = rz @ rx * draw(st.sampled_from([1.0, 1.0, -1.0, 1.0001, 1.1, 1e200]))
        poses[f, :, 3] = c
    if draw(st.booleans()):
        poses[draw(st.integers(0, frames - 1)), draw(st.integers(0, 2)), draw(st.integers(0, 3))] = draw(numbers)
    return poses.tolist()


recammaster_strings = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda values: " ".join("[" + " ".join(map(str, values[i : i + 4])) + "]" for i in range(0, 16, 4)),
        st.lists(st.sampled_from(["0", "1", "-1", "nan", "inf", "1e999", "0.5", "x", "1_0"]), min_size=16, max_size=16),
    ),
)
recammaster_documents = st.dictionaries(
    st.sampled_from(["frame0", "frame1", "frame2", "frame10", "frame99999999999", "frame01", "cam01"]),
    st.dictionaries(st.sampled_from(["cam01", "cam02", "x"]), recammaster_strings, max_size=3) | json_values,
    min_size=1,
    max_size=4,
)
trajectory_documents = st.fixed_dictionaries(
    {"format": st.just(TRAJECTORY_FORMAT)},
    optional={
        "version": st.sampled_from([1, 2, "1", None]),
        "convention": st.sampled_from(["w2c", "c2w", 3]),
        "axes": st.sampled_from(["opencv", "opengl", None]),
        "w2c": near_rotations() | matrix_lists() | json_values,
        "K": st.sampled_from([None, [[100, 0, 50], [0, 100, 40], [0, 0, 1]], [[1, 2], [3]], "K", [[10**400]]])
        | json_values,
        "selection": json_values,
        "source": json_values,
        "extra": json_values,
    },
)
camera_documents = st.one_of(
    json_values, near_rotations(), matrix_lists(3), matrix_lists(4), recammaster_documents, trajectory_documents
)
npy_arrays = hnp.arrays(
    st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.boolean_dtypes(), hnp.complex_number_dtypes()),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
)
reader_options = st.fixed_dictionaries(
    {
        "camera": st.sampled_from([None, 1, "cam01", "cam9"]),
        "convention": st.sampled_from([None, "w2c", "c2w"]),
        "axes": st.sampled_from([None, "opencv", "opengl"]),
        "num_frames": st.sampled_from([None, 1, 3]),
    }
)


def assert_valid_or_camera_error(path: Path, options: dict) -> None:
    try:
        trajectory = read_cameras(path, **options)
    except CameraError as error:
        assert path.name in str(error), str(error)
        return
    w2c = trajectory.w2c
    assert w2c.ndim == 3 and w2c.shape[1:] == (3, 4) and len(w2c) >= 1 and np.isfinite(w2c).all()
    rotation = w2c[:, :, :3]
    assert np.abs(np.swapaxes(rotation, 1, 2) @ rotation - np.eye(3)).max() < 1e-3
    assert (np.linalg.det(rotation) > 0).all()


@FUZZ
@given(camera_documents, reader_options)
def test_any_camera_json_gives_a_trajectory_or_a_camera_error(document, options):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cameras.json"
        path.write_text(json.dumps(document))
        assert_valid_or_camera_error(path, options)


@FUZZ
@given(npy_arrays | st.binary(max_size=200).map(bytes), reader_options)
def test_any_npy_file_gives_a_trajectory_or_a_camera_error(content, options):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cameras.npy"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            np.save(path, content)
        assert_valid_or_camera_error(path, options)


@FUZZ
@given(near_rotations(), st.sampled_from(["w2c", "c2w"]), st.sampled_from(["opencv", "opengl"]), st.booleans())
def test_plain_pose_arrays_are_rotations_or_camera_errors(poses, convention, axes, as_npy):
    """The plain-array path with its convention stated, where nearly-valid poses reach every check."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("cameras.npy" if as_npy else "cameras.json")
        if as_npy:
            np.save(path, np.array(poses))
        else:
            path.write_text(json.dumps(poses))
        assert_valid_or_camera_error(path, {"convention": convention, "axes": axes})


@FUZZ
@given(near_rotations() | matrix_lists(), trajectory_documents.map(lambda d: d.get("K")), json_values)
def test_trajectory_files_with_any_fields(w2c, K, selection):
    """Our trajectory JSON with a right header, so that the poses, K and the selection are what is checked."""
    document = dict(format=TRAJECTORY_FORMAT, version=1, convention="w2c", axes="opencv", w2c=w2c, K=K)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trajectory.json"
        path.write_text(json.dumps(document | {"selection": selection}))
        assert_valid_or_camera_error(path, {})


@FUZZ
@given(st.lists(st.integers(0, 3) | st.integers(0, 10**12), min_size=1, max_size=4, unique=True), recammaster_strings)
def test_recammaster_files_with_any_frame_numbers(frames, text):
    """Frame numbers with gaps (up to frame999999999999, which must not build a list that long)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "camera_extrinsics.json"
        path.write_text(json.dumps({f"frame{i}": {"cam01": text} for i in frames}))
        assert_valid_or_camera_error(path, {"camera": 1})


# Valid files must be accepted, as the poses they hold: a reader that refused everything would pass the
# properties above.


@st.composite
def valid_trajectories(draw) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV w2c `[F, 3, 4]` of random rotations (unit quaternions) and translations, as float64,
    and its camera-to-world `[F, 4, 4]`."""
    frames = draw(st.integers(1, 5))
    quaternions = draw(
        hnp.arrays(np.float64, (frames, 4), elements=st.floats(-1, 1)).filter(
            lambda q: (np.linalg.norm(q, axis=1) > 0.1).all()
        )
    )
    w, x, y, z = (quaternions / np.linalg.norm(quaternions, axis=1, keepdims=True)).T
    rotations = np.stack(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    ).transpose(2, 0, 1)
    translations = draw(hnp.arrays(np.float64, (frames, 3), elements=st.floats(-50, 50)))
    w2c = np.concatenate([rotations, translations[..., None]], -1)
    c2w = np.linalg.inv(np.concatenate([w2c, np.tile([[[0.0, 0, 0, 1]]], (frames, 1, 1))], 1))
    return w2c, c2w


def homogeneous(poses: np.ndarray) -> np.ndarray:
    return np.concatenate([poses[:, :3], np.tile([[[0.0, 0, 0, 1]]], (len(poses), 1, 1))], 1)


@VALID
@given(
    valid_trajectories(),
    st.sampled_from(["w2c", "c2w"]),
    st.sampled_from(["opencv", "opengl"]),
    st.sampled_from([3, 4]),
    st.booleans(),
)
def test_valid_plain_arrays_parse_to_their_poses(poses, convention, axes, rows, as_npy):
    w2c, c2w = poses
    flip = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera axes: y up, z backward
    stored = {
        ("w2c", "opencv"): homogeneous(w2c),
        ("c2w", "opencv"): c2w,
        ("w2c", "opengl"): flip @ homogeneous(w2c),
        ("c2w", "opengl"): c2w @ flip,
    }[convention, axes][:, :rows]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("cameras.npy" if as_npy else "cameras.json")
        if as_npy:
            np.save(path, stored)
        else:
            path.write_text(json.dumps(stored.tolist()))
        trajectory = read_cameras(path, convention=convention, axes=axes, num_frames=len(w2c))
    np.testing.assert_allclose(trajectory.w2c, w2c, atol=1e-9 * (1 + np.abs(w2c).max()))


@VALID
@given(
    valid_trajectories(),
    st.none() | st.tuples(st.floats(1, 5000), st.floats(1, 5000), st.floats(-500, 500), st.floats(-500, 500)),
    st.none() | st.text(max_size=10),
)
def test_valid_trajectory_files_parse_to_their_poses(poses, focal_centre, selection):
    w2c, _ = poses
    K = None
    if focal_centre is not None:
        fx, fy, cx, cy = focal_centre
        K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    document = dict(format=TRAJECTORY_FORMAT, version=1, convention="w2c", axes="opencv", w2c=w2c.tolist(), K=K)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trajectory.json"
        path.write_text(json.dumps(document | {"selection": selection}))
        trajectory = read_cameras(path)
        np.testing.assert_array_equal(trajectory.w2c, w2c)  # JSON floats round-trip exactly
        assert trajectory.selection == selection and trajectory.source == str(path)
        if K is None:
            assert trajectory.K is None
        else:
            np.testing.assert_array_equal(trajectory.K, K)
        copy = Path(folder) / "copy.json"
        write_cameras(copy, trajectory)
        np.testing.assert_array_equal(read_cameras(copy).w2c, w2c)


@VALID
@given(valid_trajectories(), st.integers(1, 10), st.integers(1, 3))
def test_valid_recammaster_files_give_recammasters_relative_poses(poses, camera, other_cameras):
    """ReCamMaster's own steps on the file (transpose, columns [1, 2, 0, 3], negate column 1, /100) and
    `w2c_ref @ c2w_i` give the same relative poses as ours: what its camera encoder sees."""
    _, c2w = poses
    c2w = c2w.copy()
    c2w[:, :3, 3] *= 100  # centimetres
    # Unreal's row-vector layout: rows 0-2 are the camera's axes, row 3 its position.
    text = lambda matrix: " ".join("[" + " ".join(f"{v:.12g}" for v in row) + "]" for row in matrix.T) + " "
    names = {camera, *(1 + (camera + i) % 10 for i in range(1, other_cameras))}
    document = {f"frame{f}": {f"cam{c:02d}": text(c2w[f]) for c in names} for f in range(len(c2w))}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "camera_extrinsics.json"
        path.write_text(json.dumps(document))
        trajectory = read_cameras(path, camera=camera, num_frames=len(c2w))
    assert trajectory.selection == f"cam{camera:02d}"
    theirs = np.array(c2w)[:, :, [1, 2, 0, 3]]
    theirs[:, :3, 1] *= -1
    theirs[:, :3, 3] /= 100
    want = np.linalg.inv(theirs[0]) @ theirs
    ours = homogeneous(trajectory.w2c)[0] @ np.linalg.inv(homogeneous(trajectory.w2c))
    np.testing.assert_allclose(ours, want, atol=1e-8 * (1 + np.abs(want).max()))


def test_deeply_nested_and_non_utf8_json_are_camera_errors(tmp_path):
    path = tmp_path / "cameras.json"
    for content, message in ((b"[" * 100_000, "nested too deeply"), (b"\xff\xfe[1]", "not a text file")):
        path.write_bytes(content)
        with pytest.raises(CameraError, match=message):
            read_cameras(path)


# -- configs -------------------------------------------------------------------------------------------


def keys_of(config) -> set[str]:
    """Every key of a nested mapping, as text."""
    if not isinstance(config, dict):
        return set()
    return {str(k) for k in config} | {key for value in config.values() for key in keys_of(value)}


config_values = st.one_of(
    st.integers(-2, 64),
    st.sampled_from(["float32", "bfloat16", "auto", "none", "full", "chunked", "unipc", "euler", ""]),
    st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)).map(list),
    json_values,
)


def config_dicts(cls, nested: dict | None = None):
    """Random mappings over the fields of `cls` (and a few unknown keys), nested sections included."""
    names = [f.name for f in dataclasses.fields(cls)]
    value = config_values
    if nested:
        value = st.one_of(config_values, *(config_dicts(section) for section in nested.values()))
    return st.dictionaries(st.sampled_from([*names, "dimm", "typo", "3"]) | st.text(max_size=6), value, max_size=6)


def assert_built_or_named(build, config, required=()) -> None:
    try:
        built = build(config)
    except (ValueError, TypeError) as error:
        named, message = keys_of(config) | set(required), str(error).lower()
        assert any(repr(key).lower() in message or (key and key.lower() in message) for key in named), (
            f"{error!r} names none of {sorted(named)}"
        )
        return
    assert dataclasses.is_dataclass(built)


@FUZZ
@given(config_dicts(SamplingConfig))
def test_sampling_configs(config):
    assert_built_or_named(lambda c: dataclass_from_config(SamplingConfig, c, "sample.sampling"), config)


@FUZZ
@given(config_dicts(WanDiTConfig, {"attention": AttentionConfig}))
def test_dit_configs(config):
    try:
        built = WanDiTConfig.from_config(config)
    except (ValueError, TypeError):
        assert_built_or_named(WanDiTConfig.from_config, config)
        return
    sizes = (built.dim, built.ffn_dim, built.num_heads, built.num_layers, built.in_channels, built.out_channels)
    assert all(isinstance(s, int) and s >= 1 for s in sizes) and built.dim % built.num_heads == 0


memory_configs = st.fixed_dictionaries(
    {},
    optional={
        "dit": config_dicts(WanDiTConfig) | json_values,
        "camera": st.booleans() | json_values,
        "tokenizers": st.fixed_dictionaries({}, optional={"ranked": json_values, "rest": config_values}) | json_values,
        "merge": st.fixed_dictionaries({}, optional={"blocks": json_values, "fraction": numbers}) | json_values,
        "extra": json_values,
    },
)


@FUZZ
@given(memory_configs)
def test_memory_configs(config):
    assert_built_or_named(MemoryConfig.from_config, config, required=["dit"])


# -- bank manifests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bank_template(tmp_path_factory):
    """A session with two entries; its manifest is what the fuzzer damages."""
    path = tmp_path_factory.mktemp("bank") / "template"
    rng = np.random.default_rng(0)
    with MemoryBank.create(path, "nvs", "hash", key="cameras") as bank:
        for turn in range(2):
            latents = rng.standard_normal((2, 3, 4, 8)).astype(np.float32)
            cameras = np.tile(np.eye(3, 4), (2, 1, 1))
            bank.add(MemoryEntry(latents=latents, turn=turn, cameras=cameras, metadata={"turn": turn}))
    return path


def mutate(value, path: list, replacement):
    """`value` with the element at `path` (keys / indices) replaced, or deleted if `replacement` is DELETE."""
    if not path:
        return replacement
    key, rest = path[0], path[1:]
    if isinstance(value, dict) and key in value:
        copy = dict(value)
        if not rest and replacement is DELETE:
            del copy[key]
        else:
            copy[key] = mutate(value[key], rest, replacement)
        return copy
    if isinstance(value, list) and isinstance(key, int) and key < len(value):
        copy = list(value)
        if not rest and replacement is DELETE:
            del copy[key]
        else:
            copy[key] = mutate(value[key], rest, replacement)
        return copy
    return value


DELETE = object()


def paths_in(value, prefix=()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        found += [p for k, v in value.items() for p in paths_in(v, (*prefix, k))]
    elif isinstance(value, list):
        found += [p for i, v in enumerate(value) for p in paths_in(v, (*prefix, i))]
    return found


@st.composite
def damaged_manifests(draw, text: str) -> str:
    manifest = json.loads(text)
    kind = draw(st.sampled_from(["truncate", "replace", "delete", "random"]))
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text) - 1))]
    if kind == "random":
        return json.dumps(draw(json_values))
    where = list(draw(st.sampled_from(paths_in(manifest)[1:])))
    replacement = DELETE if kind == "delete" else draw(json_values | st.sampled_from(["../../etc/passwd", "0" * 64]))
    return json.dumps(mutate(manifest, where, replacement))


@settings(FUZZ, max_examples=400)
@given(st.data())
def test_damaged_manifests_give_bank_errors_only(bank_template, data):
    text = (bank_template / "manifest.json").read_text()
    damaged = data.draw(damaged_manifests(text))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "session"
        shutil.copytree(bank_template, path)
        (path / "manifest.json").write_text(damaged)
        try:
            with MemoryBank.open(path, readonly=True) as reader:
                for info in reader.entries():
                    entry = reader.load(info.entry_id)
                    assert entry.latents is not None and np.isfinite(entry.latents).all()
            MemoryBank.open(path).close()
        except BankError as error:
            assert str(path) in str(error), str(error)


# -- retrieval scoring ---------------------------------------------------------------------------------

finite_or_not = st.one_of(st.floats(-3, 3), st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))


def small_arrays(shape, elements=finite_or_not):
    return hnp.arrays(np.float32, shape, elements=elements)


intrinsics = st.builds(
    Intrinsics, *(st.floats(-5, 60) | st.sampled_from([np.nan, np.inf]) for _ in range(6))
) | st.just(Intrinsics.from_hfov(60, 32, 48))


@FUZZ_JIT
@given(
    small_arrays(hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4)) | small_arrays((3, 3, 4)),
    st.lists(small_arrays((2, 3, 4)) | small_arrays((1, 3, 4)) | small_arrays((2, 4, 4)), max_size=3),
    intrinsics,
    st.sampled_from([1.0, np.inf, 0.0, -1.0, np.nan]),
)
def test_fov_retrieval_refuses_bad_cameras_or_scores_finitely(target, memory, intrinsics, radius):
    try:
        selection, scores = retrieve_by_fov(target, memory, 2, intrinsics, radius, grid=GRID)
    except ValueError as error:
        assert any(word in str(error) for word in ("camera", "intrinsics", "radius", "trajector")), str(error)
        return
    for values in scores:
        assert np.isfinite(values).all() and (np.asarray(values) >= 0).all() and (np.asarray(values) <= 1).all()
    assert len(scores.score) == len(memory) and all(0 <= row < len(memory) for row in selection.rows())


@st.composite
def packed_words(draw) -> tuple[np.ndarray, np.ndarray]:
    """(target, memory) uint32 arrays, mostly of the grid's word count and the right ranks."""
    words = num_words(GRID)
    n = draw(st.sampled_from([words, words, words, 1, words + 1]))
    target = draw(hnp.arrays(np.uint32, st.sampled_from([(n,), (n,), (1, n), ()])))
    m = draw(st.sampled_from([n, n, n, n + 1]))
    memory = draw(hnp.arrays(np.uint32, st.sampled_from([(3, m), (1, m), (0, m), (m,), (1, 2, m)])))
    return target, memory


@FUZZ_JIT
@given(packed_words())
def test_fov_scores_of_any_words_are_finite_fractions(words):
    target, memory = words
    well_formed = target.shape == (num_words(GRID),) and memory.ndim == 2 and memory.shape[1:] == target.shape
    try:
        scores = fov_scores(target, memory, GRID)
    except ValueError as error:
        assert "VideoFOV" in str(error) and not well_formed, str(error)
        return
    assert well_formed, (target.shape, memory.shape)
    event("well-formed words scored")
    for values in scores:
        assert values.shape == memory.shape[:1]
        assert np.isfinite(values).all() and (np.asarray(values) >= 0).all() and (np.asarray(values) <= 1).all()


def test_fov_bitmask_of_good_cameras_has_the_grid_size():
    cameras = np.tile(np.eye(3, 4, dtype=np.float32), (2, 1, 1))
    assert fov_bitmask(cameras, Intrinsics.from_hfov(60, 32, 48), grid=GRID).shape == (num_words(GRID),)
    with pytest.raises(ValueError, match=r"cameras contain NaN or inf"):
        fov_bitmask(np.full((2, 3, 4), np.nan, np.float32), Intrinsics.from_hfov(60, 32, 48), grid=GRID)


@FUZZ_JIT
@given(
    small_arrays(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3)),
    small_arrays(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3)),
    st.integers(-1, 3),
)
def test_similarity_refuses_bad_embeddings_or_scores_finitely(query, keys, k):
    try:
        similarity = np.asarray(cosine_similarity(query, keys))
        selection = select_segments(query, keys, k)
    except ValueError as error:
        assert any(word in str(error) for word in ("query", "keys", "k >= 1")), str(error)
        return
    assert np.isfinite(similarity).all() and (np.abs(similarity) <= 1 + 1e-6).all()
    scores, valid = np.asarray(selection.scores), np.asarray(selection.valid)
    assert np.isfinite(scores[valid]).all()


@FUZZ_JIT
@given(small_arrays(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3)))
def test_segment_embedding_refuses_bad_encoder_output(embeddings):
    frames = np.zeros((embeddings.shape[0] if embeddings.ndim else 1, 4, 4, 3), np.uint8)
    try:
        pooled = segment_embedding(frames, lambda batch: embeddings[: len(batch)])
    except ValueError as error:
        assert "embed" in str(error) or "segment frames" in str(error), str(error)
        return
    assert np.isfinite(pooled).all()
