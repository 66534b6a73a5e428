"""The fusion ranker's features: one (candidates, F) matrix for many users' candidates in one vectorised pass.

Item attributes are the same for every user; the per-user lookups (co-visitation and session-neighbour rank,
category share, seen, co-embedding) are keyed by (user, row) and done for the whole batch in one call each; only
the similarities to the user's vectors are a gather and a small matrix product per user.

>>> keyed_lookup([(np.array([7, 3]), np.array([0.5, 2.0])), (np.array([9]), 1.0)], np.array([3, 4, 9, 7])).tolist()
[2.0, 0.0, 1.0, 0.5]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.model.catalog import Catalog
from streamrec.model.coembedding import CoEmbedding
from streamrec.model.covisitation import CovisScores, covis_rank_table
from streamrec.model.numeric import decay, segment_owners, unit, unit_rows
from streamrec.model.profiles import UserProfile
from streamrec.model.ranker import FEATURES

F_INDEX = {name: i for i, name in enumerate(FEATURES)}
"""Column of each feature in a feature matrix."""


@dataclass(slots=True)
class UserContext:
    """One user's side of the features: profile, recent item rows, co-visited items, query, co-embedding."""

    profile: UserProfile
    seeds: list[int]
    covis: CovisScores
    taste: np.ndarray
    """(2, D): the unit long-term and intent vectors."""
    categories: dict[str, float]
    """The user's decayed category weights."""
    query_vector: np.ndarray | None = None
    coemb_vector: np.ndarray | None = None
    session: CovisScores | None = None
    """Items of the user's session neighbours and their scores (:mod:`streamrec.model.sessions`)."""


@dataclass(slots=True)
class ItemState:
    """Item-side features that later events of a batch change in place, captured when a training example was
    taken (co-embeddings change only after the batch's step, so they are read when featurising)."""

    popularity: np.ndarray
    codes: np.ndarray


def taste(profile: UserProfile) -> np.ndarray:
    """(2, D): the user's unit long-term and intent vectors (a copy: later events change the profile's)."""
    return np.stack([unit(profile.long_term), unit(profile.intent)])


def tastes(profiles: Sequence[UserProfile], dim: int) -> np.ndarray:
    """(U, 2, D): :func:`taste` of each profile, to the same bits, normalised in one pass for the batch."""
    stacked = np.empty((len(profiles), 2, dim), np.float32)
    for i, profile in enumerate(profiles):
        stacked[i, 0] = profile.long_term
        stacked[i, 1] = profile.intent
    return unit_rows(stacked.reshape(-1, dim)).reshape(len(profiles), 2, dim)


def keyed_lookup(tables: Sequence[tuple[np.ndarray, np.ndarray | float]], keys: np.ndarray) -> np.ndarray:
    """Value of each of ``keys`` in the union of (keys, values) tables, 0 where absent (keys unique)."""
    out = np.zeros(len(keys), np.float32)
    parts = [
        (k, v.astype(np.float32, copy=False) if isinstance(v, np.ndarray) else np.full(len(k), v, np.float32))
        for k, v in tables
        if len(k)
    ]
    if not parts or not len(keys):
        return out
    table_keys = np.concatenate([k for k, _ in parts])
    table_vals = np.concatenate([v for _, v in parts])
    order = np.argsort(table_keys)
    table_keys = table_keys[order]
    pos = np.searchsorted(table_keys, keys).clip(max=len(table_keys) - 1)
    hit = table_keys[pos] == keys
    out[hit] = table_vals[order[pos[hit]]]
    return out


def feature_matrix(
    catalog: Catalog,
    coemb: CoEmbedding,
    users: Sequence[UserContext],
    rows: Sequence[np.ndarray],
    now: float | np.ndarray,
    freshness_half_life_s: float,
    items: ItemState | None = None,
) -> np.ndarray:
    """Feature matrices of several users' candidates, stacked: (sum of len(rows), F).

    Training examples pass ``now`` per row and the item-side state captured with them (``items``).
    """
    cat = catalog
    n_users = len(users)
    lens = np.fromiter((len(r) for r in rows), np.int64, n_users)
    all_rows = np.concatenate(rows).astype(np.int64) if n_users else np.zeros(0, np.int64)
    seg = segment_owners(lens)
    x = np.zeros((len(all_rows), len(FEATURES)), np.float32)
    if items is None:
        items = ItemState(cat.relative_popularity(all_rows, float(now)), cat.category[all_rows])
    x[:, F_INDEX["popularity"]] = items.popularity
    x[:, F_INDEX["coemb"]] = coemb.similarity_many([u.coemb_vector for u in users], all_rows, seg)
    x[:, F_INDEX["price"]] = cat.price_feature[all_rows]
    item_ts = cat.item_ts[all_rows]
    # 1 for an item published now, halving every half-life; items from the future count as new, unknown dates as 0
    x[:, F_INDEX["freshness"]] = decay(now - item_ts, freshness_half_life_s) * (item_ts > 0)
    start = 0
    for user, r in zip(users, rows, strict=True):
        end = start + len(r)
        vecs = cat.vectors[r]
        x[start:end, F_INDEX["sim_long"] : F_INDEX["sim_intent"] + 1] = vecs @ user.taste.T
        if user.query_vector is not None:
            x[start:end, F_INDEX["sim_query"]] = vecs @ user.query_vector
        start = end
    # (user, row) keys: one sorted lookup per feature for the whole batch
    width = len(cat) + 1
    keys = seg * width + all_rows
    x[:, F_INDEX["covisit"]] = keyed_lookup([covis_rank_table([user.covis for user in users], width)], keys)
    sessions = [user.session or CovisScores.empty() for user in users]
    x[:, F_INDEX["session"]] = keyed_lookup([covis_rank_table(sessions, width)], keys)
    seed_lens = np.fromiter((len(user.seeds) for user in users), np.int64, n_users)
    seen = np.fromiter(itertools.chain.from_iterable(user.seeds for user in users), np.int64, int(seed_lens.sum()))
    x[:, F_INDEX["seen"]] = keyed_lookup([(segment_owners(seed_lens) * width + seen, 1.0)], keys)
    x[:, F_INDEX["category"]] = category_share(cat, users, seg, items.codes)
    return x


def category_share(catalog: Catalog, users: Sequence[UserContext], seg: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each candidate's category's share of its user's (decayed) category weight."""
    width = len(catalog.category_names) + 1  # codes shifted by one: NO_CATEGORY (-1) -> 0
    code_of = catalog.category_code
    keys: list[int] = []
    shares: list[float] = []
    for u, user in enumerate(users):
        weights = user.categories
        total = sum(weights.values())
        if total <= 0.0:
            continue
        base = u * width + 1
        for name, w in weights.items():
            code = code_of.get(name)
            if code is not None:
                keys.append(base + code)
                shares.append(w / total)
    table = (np.array(keys, np.int64), np.array(shares, np.float32))
    return keyed_lookup([table], seg * width + codes.astype(np.int64) + 1)
