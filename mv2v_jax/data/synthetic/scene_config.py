"""What a synthetic scene is drawn from: video size, room, objects and camera ranges, and the presets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mv2v_jax.config import dataclass_from_config
from mv2v_jax.geometry import Intrinsics
from mv2v_jax.io.video import check_num_frames

# Named colours (sRGB in [0, 1]): surfaces, landmarks and objects draw from these, so the prompt can
# name what the video shows.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.15, 0.15),
    "orange": (0.95, 0.55, 0.10),
    "yellow": (0.95, 0.85, 0.20),
    "green": (0.20, 0.65, 0.25),
    "teal": (0.10, 0.60, 0.60),
    "blue": (0.15, 0.30, 0.80),
    "purple": (0.50, 0.25, 0.70),
    "pink": (0.95, 0.55, 0.70),
    "brown": (0.50, 0.32, 0.18),
    "white": (0.92, 0.92, 0.90),
    "grey": (0.55, 0.55, 0.55),
    "black": (0.12, 0.12, 0.12),
}
OBJECT_COLOURS = tuple(c for c in COLOURS if c not in ("white", "grey"))  # stand out from the walls
SURFACE_KINDS = ("patterns", "palette")  # SceneConfig.surfaces (data.synthetic.world)
CAMERA_STARTS = ("random", "shared")  # SceneConfig.camera_start (data.synthetic.cameras)
CAMERA_CLEARANCE = 0.35  # metres between a camera and an object's surface, or a wall
MAX_WOBBLE = 0.2  # metres an object's orbit radius oscillates by, at most


@dataclass(frozen=True)
class SceneConfig:
    """Size of the rendered videos and the ranges scenes are drawn from (metres, degrees).

    surfaces: "patterns" (procedural textures) or "palette" (flat walls of four palette colours with
      large landmarks; data.synthetic.world).
    camera_start: "random": every camera starts anywhere in the camera region, facing its own heading,
      and makes one of ReCamMaster's moves; "shared": ReCamMaster's own setting, where every camera
      starts at the source video's first camera (camera 0, which stays still) and turns from there by
      `rotation_degrees` (pans and tilts, with at most `rotation_move_metres` of translation), so the
      new content of a view is what lies beyond the source's field of view (data.synthetic.cameras).
    """

    height: int = 64
    width: int = 96
    num_frames: int = 17  # 4k + 1 (Wan's VAE)
    num_cameras: int = 10  # MultiCamVideo's cameras per scene
    hfov_degrees: float = 65.0  # ours; MultiCamVideo's 18-50 mm lenses on 23.76 mm give 27-67 degrees
    room_half_extent: tuple[float, float] = (3.5, 5.0)  # a and b are drawn from this range
    room_height: tuple[float, float] = (2.6, 3.4)
    num_objects: tuple[int, int] = (2, 4)  # inclusive
    object_size: tuple[float, float] = (0.25, 0.45)  # sphere radius or box half-side
    object_travel: tuple[float, float] = (1.0, 2.5)  # metres along its path over the clip
    camera_region: float = 0.8  # cameras start within this radius of the room's centre ...
    camera_height: tuple[float, float] = (1.2, 1.7)  # ... at this height
    camera_pitch: tuple[float, float] = (-20.0, 5.0)
    heading_jitter: float = 20.0
    # ReCamMaster's README ranges: pans 5-45 (we use 30-60, the issue's), tilts 5-30, arcs 15-75,
    # translations 1/4-1 of the distance to the character (here metres).
    pan_degrees: tuple[float, float] = (30.0, 60.0)
    tilt_degrees: tuple[float, float] = (10.0, 30.0)
    arc_degrees: tuple[float, float] = (15.0, 75.0)
    arc_pivot_distance: tuple[float, float] = (1.5, 2.5)
    move_metres: tuple[float, float] = (0.5, 1.2)
    source_pan_degrees: tuple[float, float] = (10.0, 20.0)  # camera 0, the slow source video
    source_move_metres: tuple[float, float] = (0.3, 0.6)
    variable_speed: float = 0.5  # fraction of cameras with ReCamMaster's exponential speed profile
    ambient: float = 0.45
    surfaces: str = "patterns"
    landmark_radius: tuple[float, float] = (0.25, 0.45)
    palette_mix: float = 0.0  # "palette": share by which surfaces are blended towards a pale grey
    camera_start: str = "random"
    rotation_degrees: tuple[float, float] = (30.0, 90.0)  # "shared": how far each view turns (the 30-90)
    rotation_groups: int = 3  # "shared": views turn in this many directions, several views each (overlaps)
    rotation_move_metres: float = 0.1  # "shared": translation while turning, at most ("little translation")
    max_pitch_degrees: float = 45.0  # "shared": tilts stop here

    def __post_init__(self):
        check_num_frames(self.num_frames)
        if self.height < 1 or self.width < 1 or self.num_cameras < 1:
            raise ValueError(f"height, width and num_cameras must be positive, got {self}")
        if not 1 <= self.num_objects[0] <= self.num_objects[1] <= len(OBJECT_COLOURS):
            raise ValueError(f"num_objects={self.num_objects} must be 1 <= low <= high <= {len(OBJECT_COLOURS)}")
        if self.surfaces not in SURFACE_KINDS:
            raise ValueError(f"surfaces={self.surfaces!r} must be one of {SURFACE_KINDS}")
        if self.camera_start not in CAMERA_STARTS:
            raise ValueError(f"camera_start={self.camera_start!r} must be one of {CAMERA_STARTS}")
        if not 0 <= self.palette_mix <= 1:
            raise ValueError(f"palette_mix={self.palette_mix} must be in [0, 1]")
        if not 0 < self.landmark_radius[0] <= self.landmark_radius[1]:
            raise ValueError(f"landmark_radius={self.landmark_radius} must be 0 < low <= high")
        if not 0 <= self.rotation_degrees[0] <= self.rotation_degrees[1] or self.rotation_groups < 1:
            raise ValueError(f"rotation_degrees={self.rotation_degrees} must be 0 <= low <= high, rotation_groups >= 1")
        if not 0 < self.hfov_degrees < 180:
            raise ValueError(f"hfov_degrees={self.hfov_degrees} must be in (0, 180)")
        inner, outer = self.orbit_limits(self.room_half_extent[0], self.object_size[1], MAX_WOBBLE)
        if inner > outer:
            raise ValueError(
                f"room_half_extent={self.room_half_extent} leaves no room for objects of size {self.object_size}"
                f" round the camera region of radius {self.camera_region}"
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SceneConfig:
        """From an ml_collections ConfigDict / dict; an unknown key is an error that names it."""
        return dataclass_from_config(cls, config, "SceneConfig")

    def orbit_limits(self, half_extent: float, size: float, wobble: float) -> tuple[float, float]:
        """Orbit radii keeping an object of `size` (its orbit wobbling by `wobble`) clear of the
        cameras' starting region, with room for them to move, and inside a room whose smaller
        half-extent is `half_extent`."""
        inner = self.camera_region + self.object_size[1] + CAMERA_CLEARANCE + 0.4 + wobble
        outer = half_extent - size * math.sqrt(2) - 0.15 - wobble
        return inner, outer

    @property
    def intrinsics(self) -> np.ndarray:
        """`K` `[3, 3]` float64 for this config's size and field of view."""
        return Intrinsics.from_hfov(self.hfov_degrees, self.height, self.width).matrix()


PRESETS: dict[str, SceneConfig] = {
    "tiny": SceneConfig(height=32, width=48, num_frames=9, num_cameras=4),  # tests
    "small": SceneConfig(height=64, width=96, num_frames=17, num_cameras=10),  # the shipped CPU model
    "medium": SceneConfig(height=128, width=192, num_frames=33, num_cameras=10),
    "full": SceneConfig(height=480, width=832, num_frames=81, num_cameras=10),  # the paper's video size
}
