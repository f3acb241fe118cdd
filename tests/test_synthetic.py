"""The procedural multi-camera generator: determinism, camera conventions, depth against independent
geometry, colour consistency across views, and view overlaps that make memory matter."""

import dataclasses
import math

import numpy as np
import pytest
from PIL import Image

from mv2v_jax.data.synthetic import (
    PRESETS,
    MovingObject,
    SceneConfig,
    generate_scene,
    render,
    sample_world,
    write_preview,
)
from mv2v_jax.geometry import Intrinsics, invert_pose
from mv2v_jax.io.cameras import check_extrinsics
from mv2v_jax.trajectories import TRAJECTORY_KINDS, camera_trajectory, direction, look_w2c

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def small_scene():
    return generate_scene(7, PRESETS["small"])


def unproject(depth: np.ndarray, w2c: np.ndarray, K: np.ndarray) -> np.ndarray:
    """z-depth `[H, W]` of a camera -> world points `[H, W, 3]` (pixel centres at +0.5)."""
    height, width = depth.shape
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    camera = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1)
    c2w = invert_pose(w2c)
    return camera @ c2w[:, :3].T + c2w[:, 3]


def visible_in(scene, a: int, b: int, frame: int) -> np.ndarray:
    """Pixels of camera a (bool `[H, W]`) whose surface point camera b sees at the same frame: it
    projects inside b's image with b's depth there agreeing (within 3%)."""
    depth, K = scene["depth"], scene["K"]
    height, width = depth.shape[2:]
    points = unproject(depth[a, frame].astype(np.float64), scene["w2c"][a, frame], K)
    in_b = points @ scene["w2c"][b, frame, :, :3].T + scene["w2c"][b, frame, :, 3]
    z = in_b[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = K[0, 0] * in_b[..., 0] / z + K[0, 2], K[1, 1] * in_b[..., 1] / z + K[1, 2]
    inside = (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    rows, cols = (
        np.clip(np.nan_to_num(v), 0, height - 1).astype(int),
        np.clip(np.nan_to_num(u), 0, width - 1).astype(int),
    )
    return inside & (np.abs(depth[b, frame][rows, cols] - z) < 0.03 * z)


def test_same_seed_same_scene_and_no_global_state():
    state = np.random.get_state()
    first, second = generate_scene(3, TINY), generate_scene(3, TINY)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), state, strict=True))
    for key in ("video", "depth", "w2c", "K"):
        np.testing.assert_array_equal(first[key], second[key])
    assert first["prompt"] == second["prompt"] and first["trajectories"] == second["trajectories"]
    other = generate_scene(4, TINY)
    assert np.abs(first["video"].astype(int) - other["video"]).mean() > 10
    assert first["prompt"] != other["prompt"]
    # The world is drawn before the cameras: sample_world gives the scene's world without rendering.
    assert sample_world(3, TINY).half_extent == first["world"].half_extent


def test_shapes_dtypes_and_cameras_are_rotations():
    scene = generate_scene(0, TINY)
    views, frames, height, width = TINY.num_cameras, TINY.num_frames, TINY.height, TINY.width
    assert scene["video"].shape == (views, frames, height, width, 3) and scene["video"].dtype == np.uint8
    assert scene["depth"].shape == (views, frames, height, width) and scene["depth"].dtype == np.float32
    assert scene["w2c"].shape == (views, frames, 3, 4)
    for w2c in scene["w2c"]:
        check_extrinsics(w2c, "synthetic")  # orthonormal, det +1
    np.testing.assert_allclose(scene["K"][0, 0], width / 2 / math.tan(math.radians(TINY.hfov_degrees) / 2))
    np.testing.assert_allclose(scene["K"][:2, 2], [width / 2, height / 2])
    # The room is closed: every ray hits something, between the nearest object and the far corner.
    a, b = scene["world"].half_extent
    assert scene["depth"].min() > 0 and scene["depth"].max() < math.hypot(2 * a, 2 * b, scene["world"].height)
    assert set(scene["trajectories"]) <= set(TRAJECTORY_KINDS)


def test_opencv_axes():
    """x right, y down, z forward: a point ahead has z > 0, one to the right x > 0, one above y < 0."""
    position, yaw, pitch = np.array([0.5, -0.2, 1.4]), 30.0, -10.0
    w2c = look_w2c(position[None], direction(yaw, pitch)[None])[0]
    forward = direction(yaw, pitch)
    right = direction(yaw - 90, 0)  # yaw is counter-clockwise seen from above (z up)
    to_camera = lambda p: w2c[:, :3] @ p + w2c[:, 3]
    np.testing.assert_allclose(to_camera(position + 2 * forward), [0, 0, 2], atol=1e-12)
    assert to_camera(position + forward + right)[0] > 0.9
    assert to_camera(position + forward + np.array([0, 0, 1]))[1] < -0.9


@pytest.mark.parametrize("kind", [k for k in TRAJECTORY_KINDS if k != "static"])
def test_trajectory_moves(kind):
    """Each move ends where its name and amount say (30 degrees or 0.8 m)."""
    position, yaw, pitch = np.array([0.0, 0.0, 1.5]), 40.0, -5.0
    move, sign = kind.split("_")
    w2c = camera_trajectory(kind, position, yaw, pitch, 30.0 if move in ("pan", "tilt", "arc") else 0.8, 9)
    c2w = invert_pose(w2c)
    centres, forward = c2w[:, :, 3], c2w[:, :, 2]
    np.testing.assert_allclose(centres[0], position, atol=1e-12)
    np.testing.assert_allclose(forward[0], direction(yaw, pitch), atol=1e-12)
    left = -direction(yaw - 90, 0)
    if move == "pan":
        np.testing.assert_allclose(forward[-1], direction(yaw + (30 if sign == "left" else -30), pitch), atol=1e-12)
    elif move == "tilt":
        np.testing.assert_allclose(forward[-1], direction(yaw, pitch + (30 if sign == "up" else -30)), atol=1e-12)
    elif move == "zoom":
        np.testing.assert_allclose(centres[-1] - position, (0.8 if sign == "in" else -0.8) * forward[0], atol=1e-12)
    elif move == "translate":
        axis = {"left": left, "right": -left, "up": [0, 0, 1], "down": [0, 0, -1]}[sign]
        np.testing.assert_allclose(centres[-1] - position, 0.8 * np.array(axis), atol=1e-12)
        np.testing.assert_allclose(forward[-1], forward[0], atol=1e-12)
    else:  # arcs keep the pivot, 2 m ahead, on the optical axis and move the camera to the named side
        pivot = position + 2.0 * direction(yaw, pitch)
        in_camera = np.einsum("fij,j->fi", w2c[:, :, :3], pivot) + w2c[:, :, 3]
        np.testing.assert_allclose(in_camera[:, :2], 0, atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(centres - pivot, axis=-1), 2.0)
        assert (centres[-1] - position) @ left * (1 if sign == "left" else -1) > 0.5


def test_variable_speed_keeps_endpoints():
    """ReCamMaster's exponential speed profile: same start and end, front-loaded for ease > 0."""
    constant = camera_trajectory("zoom_in", (0, 0, 1.5), 0, 0, 1.0, 9)
    fast_start = camera_trajectory("zoom_in", (0, 0, 1.5), 0, 0, 1.0, 9, ease=3.0)
    np.testing.assert_allclose(fast_start[[0, -1]], constant[[0, -1]], atol=1e-12)
    distance = lambda w2c: np.linalg.norm(invert_pose(w2c)[:, :, 3] - [0, 0, 1.5], axis=-1)
    assert distance(fast_start)[4] > distance(constant)[4] + 0.2
    assert np.all(np.diff(distance(fast_start)) > 0)


def test_wall_depth_matches_plane_intersections():
    """With the objects removed, every pixel's depth is the nearest of the six room planes, computed
    here independently in float64 (plane by plane, hit point inside the face)."""
    scene = generate_scene(1, TINY)
    world = dataclasses.replace(scene["world"], objects=())
    w2c, K = scene["w2c"][:, ::4].reshape(-1, 3, 4), scene["K"]
    _, depth = render(world, w2c, K, (TINY.height, TINY.width))
    low, high = world.bounds
    v, u = np.meshgrid(np.arange(TINY.height) + 0.5, np.arange(TINY.width) + 0.5, indexing="ij")
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    for camera, rendered in zip(w2c, depth, strict=True):
        origin, world_rays = invert_pose(camera)[:, 3], rays @ camera[:, :3]
        expected = np.full(rays.shape[:2], np.inf)
        for axis in range(3):
            for plane in (low[axis], high[axis]):
                with np.errstate(divide="ignore", invalid="ignore"):
                    t = (plane - origin[axis]) / world_rays[..., axis]
                hit = origin + t[..., None] * world_rays
                on_face = np.all((hit >= low - 1e-9) & (hit <= high + 1e-9), axis=-1) & (t > 0)
                expected = np.where(on_face, np.minimum(expected, t), expected)
        np.testing.assert_allclose(rendered, expected, rtol=1e-5)


def test_object_depth_and_colour_on_the_optical_axis():
    """A camera aimed at a sphere's centre sees it at distance - radius, in the sphere's colour."""
    scene = generate_scene(2, TINY)
    sphere = MovingObject(
        shape="sphere",
        colour_name="blue",
        colour=np.array([0.15, 0.3, 0.8]),
        size=0.4,
        orbit_radius=2.2,
        phase=0.3,
        angular_speed=0.5,
        wobble=0.1,
        wobble_frequency=1.0,
        wobble_phase=0.2,
        bounce=0.3,
        bounce_frequency=1.5,
        spin=0.0,
    )
    world = dataclasses.replace(scene["world"], objects=(sphere,))
    times = np.linspace(0, 1, 5)
    centres = sphere.centres(times)
    positions = np.array([[0.2, -0.3, 1.5]] * 5)
    w2c = look_w2c(positions, centres - positions)
    K = Intrinsics.from_hfov(60, 31, 31).matrix()  # odd size: the middle pixel's ray is the optical axis
    rgb, depth = render(world, w2c, K, (31, 31), times)
    np.testing.assert_allclose(depth[:, 15, 15], np.linalg.norm(centres - positions, axis=-1) - 0.4, rtol=1e-5)
    hue = rgb[:, 15, 15] / np.maximum(rgb[:, 15, 15].max(-1, keepdims=True), 1)
    np.testing.assert_allclose(hue, np.broadcast_to(sphere.colour / sphere.colour.max(), hue.shape), atol=0.02)


def test_depth_and_colour_consistent_across_views(small_scene):
    """Surface points from camera 0's depth, seen again through one-pixel cameras aimed exactly at them
    from elsewhere: where nothing is in between, they are at the expected distance and the same colour
    (shading does not depend on the viewer)."""
    scene, rng = small_scene, np.random.default_rng(0)
    frame = 8
    points = unproject(scene["depth"][0, frame].astype(np.float64), scene["w2c"][0, frame], scene["K"])
    picks = rng.choice(points.shape[0] * points.shape[1], size=300, replace=False)
    targets = points.reshape(-1, 3)[picks]
    colours = scene["video"][0, frame].reshape(-1, 3)[picks].astype(int)
    eyes = invert_pose(scene["w2c"][0, frame])[:, 3] + rng.uniform(-0.3, 0.3, size=(len(picks), 3))
    w2c = look_w2c(eyes, targets - eyes)
    times = np.full(len(picks), scene["times"][frame])
    rgb, depth = render(scene, w2c[:, None], Intrinsics.from_hfov(1.0, 1, 1).matrix(), (1, 1), times[:1])
    distance = np.linalg.norm(targets - eyes, axis=-1)
    unoccluded = np.abs(depth[:, 0, 0, 0] - distance) < 1e-3 * distance
    assert unoccluded.mean() > 0.8
    np.testing.assert_allclose(depth[unoccluded, 0, 0, 0], distance[unoccluded], rtol=1e-5)
    assert np.abs(rgb[unoccluded, 0, 0, 0].astype(int) - colours[unoccluded]).max() <= 1


def test_views_overlap_some_pairs_and_reveal_unseen_walls(small_scene):
    scene = small_scene
    views, frame = scene["video"].shape[0], scene["video"].shape[1] // 2
    visible = {(a, b): visible_in(scene, a, b, frame) for a in range(views) for b in range(views) if a != b}
    overlap = {pair: mask.mean() for pair, mask in visible.items()}
    assert min(overlap.values()) < 0.05  # some cameras look at what others never see ...
    assert sum(value > 0.5 for value in overlap.values()) >= 2  # ... and some revisit the same places
    unseen_by_others = [
        1 - np.any([visible[a, b] for b in range(views) if b != a], axis=0).mean() for a in range(views)
    ]
    assert max(unseen_by_others) > 0.4


def test_render_reproduces_the_scene_and_moves_objects(small_scene):
    scene = small_scene
    video, depth = render(scene, scene["w2c"][:2], scene["K"], scene["video"].shape[2:4])
    np.testing.assert_array_equal(video, scene["video"][:2])
    np.testing.assert_array_equal(depth, scene["depth"][:2])
    # A static camera sees the objects move: frames differ where (and only where) objects pass.
    still = np.repeat(scene["w2c"][:, :1], scene["w2c"].shape[1], axis=1)
    frames, _ = render(scene, still, scene["K"], scene["video"].shape[2:4])
    assert (frames[:, 0] != frames[:, -1]).any(-1).mean() > 0.001
    without_objects = dataclasses.replace(scene["world"], objects=())
    frames, _ = render(without_objects, still, scene["K"], scene["video"].shape[2:4])
    np.testing.assert_array_equal(frames[:, 0], frames[:, -1])


def test_prompt_names_the_scene():
    scene = generate_scene(5, TINY)
    world, prompt = scene["world"], scene["prompt"]
    for obj in world.objects:
        assert f"{obj.colour_name} {obj.shape}" in prompt
    for surface in world.surfaces:
        assert all(name in prompt for name in surface.colour_names)
        assert all(f"{m.colour} {m.shape}" in prompt for m in surface.landmarks)


def test_config_errors():
    with pytest.raises(ValueError, match="4k \\+ 1"):
        SceneConfig(num_frames=16)
    with pytest.raises(ValueError, match=r"unknown SceneConfig config keys \['num_cams'\]"):
        SceneConfig.from_config({"num_cams": 3})
    assert SceneConfig.from_config({"height": 32, "room_height": [2.5, 3.0]}).room_height == (2.5, 3.0)
    with pytest.raises(ValueError, match="unknown trajectory kind 'dolly'"):
        camera_trajectory("dolly", (0, 0, 1), 0, 0, 1, 5)


def test_preview_contact_sheet(tmp_path):
    scene = generate_scene(0, TINY)
    path = write_preview(tmp_path / "preview.png", scene, columns=3)
    sheet = np.asarray(Image.open(path))
    height, width = TINY.height, TINY.width
    assert sheet.shape[1] == 3 * (width + 2) + 2
    # Camera 0's first frame is the sheet's first tile (below its label band).
    tile_rows = [
        y
        for y in range(sheet.shape[0] - height)
        if np.array_equal(sheet[y : y + height, 2 : 2 + width], scene["video"][0, 0])
    ]
    assert tile_rows and tile_rows[0] < 20


SHARED = dataclasses.replace(TINY, num_cameras=7, camera_start="shared", surfaces="palette", palette_mix=0.5)


def test_shared_start_views_begin_at_the_still_source_and_turn_as_configured():
    """ReCamMaster's setting: every trajectory starts at camera 0's first pose; camera 0 stands still; the
    others turn by rotation_degrees (yaw and pitch) with at most rotation_move_metres of travel."""
    scene = generate_scene(4, SHARED)
    w2c = scene["w2c"]
    np.testing.assert_allclose(w2c[:, 0], np.broadcast_to(w2c[0, 0], w2c[:, 0].shape), atol=1e-9)
    np.testing.assert_allclose(w2c[0], np.broadcast_to(w2c[0, 0], w2c[0].shape), atol=1e-9)
    assert scene["trajectories"][0] == "static"
    centres = invert_pose(w2c)[..., 3]
    assert np.linalg.norm(centres - centres[:, :1], axis=-1).max() <= SHARED.rotation_move_metres + 1e-9
    forward = w2c[:, :, 2, :3]  # each frame's viewing direction in the world
    turned = np.degrees(np.arccos(np.clip(np.einsum("vi,vi->v", forward[1:, 0], forward[1:, -1]), -1, 1)))
    low, high = SHARED.rotation_degrees
    # The pitch stops at max_pitch_degrees, so a turn may be shorter than drawn, never longer.
    assert np.all(turned <= high + 1e-6) and np.median(turned) >= low
    # Views of the first group turn left (counter-clockwise seen from above), of the second right.
    yaw = lambda f: math.degrees(math.atan2(f[1], f[0]))
    change = [((yaw(forward[v, -1]) - yaw(forward[v, 0]) + 180) % 360) - 180 for v in (1, 2)]
    assert change[0] > 0 > change[1]


def test_palette_rooms_paint_four_different_pale_walls_with_landmarks_that_stand_out():
    from mv2v_jax.data.synthetic import COLOURS, WALL_PALETTE, pale

    for seed in range(5):
        world = sample_world(seed, SHARED)
        walls = [s.colour_names[0] for s in world.surfaces[:4]]
        assert len(set(walls)) == 4 and set(walls) <= set(WALL_PALETTE)
        for surface in world.surfaces:
            assert surface.pattern == "plain" and len(surface.landmarks) >= 1
            assert all(m.colour != surface.colour_names[0] for m in surface.landmarks)
            full = np.asarray(COLOURS[surface.colour_names[0]])
            np.testing.assert_allclose(surface.colours[0], pale(full, 0.5), atol=0.05)  # + the +-0.05 jitter
        landmarks = [(m.shape, m.colour) for s in world.surfaces for m in s.landmarks]
        assert len(landmarks) == len(set(landmarks))  # each names one place
