"""Retrieval defaults (docs/paper.md, "VideoFOV retrieval" and "Two tasks"), as ml_collections configs.

    get_config("nvs")        # VideoFOV top-k over cached camera trajectories
    get_config("long_edit")  # the most recent segment plus the top k-1 by DINOv2 cosine similarity

The paper gives the grid and the score; it does not give k, the intrinsics or what "unit vectors on a
sphere" project as. Those are our choices, marked below. Record the config's hash in the memory
bank (`mv2v_jax.retrieval.bank.config_hash`): stored FOV bitmasks are only valid for the intrinsics,
radius and grid they were computed with.
"""

import ml_collections

PRESETS = {
    "nvs": dict(
        # Ours: the paper trains with 1-6 memory videos, the top 3 tokenized 1x4x4 and the rest 1x8x8.
        k=6,
        n_theta=180,  # paper: 180 x 360 latitude-longitude directions
        n_phi=360,
        # Ours: the paper fixes intrinsics at inference without stating them; 480x832 is its video size.
        hfov_degrees=60.0,
        width=832,
        height=480,
        # Ours: points on the unit sphere around the target's first camera (scene units; ReCamMaster's
        # are metres). inf reads the directions as points at infinity (rotation only).
        radius=1.0,
    ),
    "long_edit": dict(
        k=6,  # ours, as for nvs; slot 0 is always the most recent segment (paper)
        embed_chunk=16,  # frames per DINOv2 call when embedding a source segment (memory bound only)
    ),
}


def get_config(arg: str = "nvs") -> ml_collections.ConfigDict:
    if arg not in PRESETS:
        raise ValueError(f"unknown retrieval preset {arg!r}; choose one of {sorted(PRESETS)}")
    return ml_collections.ConfigDict(dict(task=arg, **PRESETS[arg]))
