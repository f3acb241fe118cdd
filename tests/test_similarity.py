"""Long-edit retrieval: pooled segment embeddings, cosine similarity, and the most-recent-plus-top-k rule."""

import numpy as np
import pytest

from mv2v_jax.retrieval.ranking import top_k
from mv2v_jax.retrieval.similarity import cosine_similarity, segment_embedding, select_segments


def random_encoder(dim=32, seed=0):
    """A stand-in for DINOv2: 4x4 average-pooled pixels through a fixed random projection."""
    projection = np.random.default_rng(seed).standard_normal((4 * 4 * 3, dim))

    def embed_frames(frames):
        n, h, w, c = frames.shape
        pooled = frames.astype(np.float64).reshape(n, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4))
        return (pooled.reshape(n, -1) / 255) @ projection

    return embed_frames


def reference_selection(query, keys, k, valid):
    """Rows the paper's rule picks: the most recent valid row, then the others by cosine, ties to the later."""
    similarity = keys @ query / (np.linalg.norm(keys, axis=1) * np.linalg.norm(query))
    rows = np.flatnonzero(valid).tolist()
    if not rows:
        return []
    others = sorted(rows[:-1], key=lambda m: (-similarity[m], -m))
    return [rows[-1], *others[: k - 1]]


def test_segment_embedding_is_the_mean_of_frame_embeddings_in_any_chunking():
    frames = np.random.default_rng(1).integers(0, 256, (37, 16, 24, 3), dtype=np.uint8)
    embed = random_encoder()
    want = embed(frames).mean(axis=0)
    for chunk in (1, 16, 64):
        np.testing.assert_allclose(segment_embedding(frames, embed, chunk=chunk), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        segment_embedding(frames.astype(np.float32), embed)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        segment_embedding(frames, lambda f: np.zeros((1, 4)))


def test_cosine_similarity_matches_numpy():
    rng = np.random.default_rng(2)
    query, keys = rng.standard_normal(64), rng.standard_normal((50, 64)) * rng.uniform(0.1, 10, (50, 1))
    keys[3] = 0  # a zero embedding is similar to nothing
    keys[4] = -2.5 * query
    norms = np.linalg.norm(keys, axis=1) * np.linalg.norm(query)
    want = np.divide(keys @ query, norms, out=np.zeros(50), where=norms > 0)
    got = np.asarray(cosine_similarity(query, keys))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[3] == 0 and got[4] == pytest.approx(-1, abs=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_selection_matches_the_reference_rule(seed):
    rng = np.random.default_rng(seed)
    count, k = int(rng.integers(1, 12)), int(rng.integers(1, 8))
    query, keys = rng.standard_normal(16), rng.standard_normal((count, 16))
    valid = rng.random(count) < 0.8
    got = select_segments(query, keys, k, valid)
    want = reference_selection(query, keys, k, valid)
    assert got.rows() == want
    assert np.asarray(got.valid).tolist() == [True] * len(want) + [False] * (k - len(want))
    similarity = np.asarray(cosine_similarity(query, keys))
    np.testing.assert_array_equal(np.asarray(got.scores)[: len(want)], similarity[want])


def test_most_recent_is_included_even_when_least_similar():
    rng = np.random.default_rng(7)
    query = rng.standard_normal(8)
    keys = query + 0.1 * rng.standard_normal((6, 8))
    keys[-1] = -query  # the newest segment looks nothing like the current one
    selection = select_segments(query, keys, 3)
    assert selection.rows()[0] == 5 and float(selection.scores[0]) == pytest.approx(-1, abs=1e-6)
    similarity = np.asarray(cosine_similarity(query, keys))
    assert selection.rows()[1:] == np.argsort(-similarity[:5])[:2].tolist()
    assert select_segments(query, keys, 3, most_recent=2).rows()[0] == 2
    assert select_segments(query, keys, 1).rows() == [5]


def test_ties_go_to_the_more_recent_segment_and_short_memories_leave_slots_empty():
    query = np.array([1.0, 0.0])
    keys = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, -1.0]])  # rows 0, 1, 3 tie at 1
    assert select_segments(query, keys, 3).rows() == [4, 3, 1]
    assert select_segments(query, keys, 8).rows() == [4, 3, 1, 0, 2]
    empty = select_segments(query, np.zeros((0, 2)), 3)
    assert empty.rows() == [] and np.asarray(empty.indices).tolist() == [-1, -1, -1]
    assert top_k(np.array([0.5, 0.5, 0.1]), 2).rows() == [1, 0]
