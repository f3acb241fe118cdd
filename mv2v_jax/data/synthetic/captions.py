"""Prompts for synthetic scenes: what the room and its objects look like, in words."""

from __future__ import annotations

from collections.abc import Sequence

from mv2v_jax.data.synthetic.world import Surface, World


def describe(world: World) -> str:
    """A prompt naming what the scene shows: each wall's pattern, the landmarks, floor, ceiling, objects."""
    walls = [_describe_surface(s) for s in world.surfaces[:4]]
    landmarks = [_article(f"{m.colour} {m.shape}") for s in world.surfaces for m in s.landmarks]
    objects = [_article(f"{o.colour_name} {o.shape}") for o in world.objects]
    floor, ceiling = (_article(_describe_surface(s)) for s in world.surfaces[4:])
    return (
        f"A room with {_join(walls)} walls, painted with {_join(landmarks)}; {floor} floor and {ceiling} ceiling."
        f" {_join(objects).capitalize()} {'moves' if len(objects) == 1 else 'move'} around the room."
    )


def _article(noun_phrase: str) -> str:
    return f"{'an' if noun_phrase[0] in 'aeiou' else 'a'} {noun_phrase}"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" and {items[-1]}"


def _describe_surface(surface: Surface) -> str:
    first, second = surface.colour_names
    if surface.pattern == "blobs":
        return f"{first} {second}-blotched"
    if surface.pattern == "gradient":
        return f"{first}-to-{second} shaded"
    return f"{first} and {second} {'striped' if surface.pattern == 'stripes' else 'checkered'}"
