"""Candidate generation: the retrieval query for each user and the pool of rows the ranker then scores.

A pool is the union of four sources — semantic (FAISS) hits for the user's taste (or search query), the items
co-visited with their recent ones, the items of their session's neighbours (:mod:`streamrec.model.sessions`) and
the currently popular items — less what the user must not be offered (their purchases, recent and hidden items)
and what no one may be offered (withdrawn items, rule exclusions).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from streamrec.model.numeric import segment_owners, unit_rows

CANDIDATE_SOURCES = 4
"""Semantic, co-visited, session neighbours' and popular: a pool holds at most this many times
``candidates_per_source`` rows."""


def retrieval_queries(
    tastes: np.ndarray | Sequence[np.ndarray], query_vectors: Sequence[np.ndarray | None], blend: float, dim: int
) -> np.ndarray:
    """One unit query vector per user for the semantic search: the blend of their long-term and intent vectors
    (``tastes``, each (2, D) unit rows), mixed with the search query's vector (weight ``blend``) when there is one.

    >>> q = retrieval_queries([np.array([[1.0, 0.0], [0.0, 1.0]])] * 2, [None, np.array([1.0, 0.0])], 0.5, 2)
    >>> np.round(q.astype(float), 3).tolist()
    [[0.707, 0.707], [0.924, 0.383]]
    """
    if len(tastes) != len(query_vectors):
        raise ValueError(f"{len(tastes)} tastes but {len(query_vectors)} query vectors")
    if not len(tastes):
        return np.zeros((0, dim), np.float32)
    both = np.asarray(tastes, np.float32)
    out = unit_rows(both[:, 0] + both[:, 1])
    searching = [i for i, qv in enumerate(query_vectors) if qv is not None]
    if searching:
        queries = np.stack([query_vectors[i] for i in searching]).astype(np.float32, copy=False)
        out[searching] = unit_rows(blend * queries + (1.0 - blend) * out[searching])
    return out


def candidate_pools(
    semantic: np.ndarray,
    covisited: Sequence[np.ndarray],
    popular: np.ndarray,
    excluded: Sequence[Sequence[int]],
    blocked: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Each user's candidate rows: the sorted union of their semantic hits (``-1``: none), co-visited rows and
    the popular rows, less their excluded rows and the rows ``blocked`` marks for everyone (withdrawn items,
    rule exclusions) — for a whole batch in a few array operations, not per user.

    >>> pools = candidate_pools(np.array([[5, 1], [2, -1]]), [np.array([1, 7]), np.array([], np.int64)],
    ...                         np.array([9]), [[7], []])
    >>> [p.tolist() for p in pools]
    [[1, 5, 9], [2, 9]]
    """
    n = len(covisited)
    if n == 0:
        return []
    cov_lens = np.fromiter(map(len, covisited), np.int64, n)
    cov = np.full((n, int(cov_lens.max(initial=0))), -1, np.int64)
    cov[np.arange(cov.shape[1])[None, :] < cov_lens[:, None]] = np.concatenate([np.zeros(0, np.int64), *covisited])
    pooled = np.concatenate(
        [
            semantic.astype(np.int64, copy=False).reshape(n, -1),
            cov,
            np.broadcast_to(popular.astype(np.int64, copy=False), (n, len(popular))),
        ],
        axis=1,
    )
    pooled.sort(axis=1)
    keep = pooled >= 0
    keep[:, 1:] &= pooled[:, 1:] != pooled[:, :-1]
    if blocked is not None:
        keep &= ~blocked[np.maximum(pooled, 0)]
    ex_lens = np.fromiter(map(len, excluded), np.int64, n)
    if ex_lens.any():
        ex_rows = np.fromiter((r for rs in excluded for r in rs), np.int64, int(ex_lens.sum()))
        width = int(max(pooled.max(initial=-1), ex_rows.max())) + 1
        banned = np.sort(segment_owners(ex_lens) * width + ex_rows)
        keys = np.arange(n, dtype=np.int64)[:, None] * width + pooled
        at = np.minimum(np.searchsorted(banned, keys), len(banned) - 1)
        keep &= banned[at] != keys
    rows = pooled[keep]
    bounds = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).tolist()
    return [rows[a:b] for a, b in itertools.pairwise(bounds)]
