"""From scored candidates to the list a user sees: no near-duplicates, caps per category and brand, optional MMR
diversity, and exploration slots.

Most lists need none of the slow parts: each user's best ``k`` (less the exploration slots) plus the exploration
picks are proposed for the whole batch at once, and the proposed lists are checked for near-duplicates and caps
in a few array operations. Only users whose proposal breaks a constraint, or every user when MMR or caps are on,
go through the greedy selection, which looks at their ``rerank_depth`` best candidates only. Both give the same
list: the greedy one keeps the best candidate that breaks nothing, slot by slot, which is the proposal itself
when the proposal breaks nothing.

**Exploration.** The last ``exploration_slots`` positions of a behaviour list go to *uncertain* candidates:
items listed fewer than ``exploration_max_exposures`` times (new or under-exposed), among the user's best
``rerank_depth`` candidates outside the list. Among them, Thompson sampling on each item's uptake rate picks
the one(s) to show: ``θ ~ Beta(1 + uptakes, 1 + exposures − uptakes)``, the highest draw wins. A new item's
draw is uniform (optimistic: uptake rates are a few percent), one shown many times without uptake draws near
zero and gives way, one that is taken keeps being drawn high until it is no longer uncertain. The ranker
learns from their outcomes as from any listed item (a taken one is a positive example, since it was in the
pool; the rest are shown-not-taken), and the exposure/uptake counts move the bandit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.model.catalog import NO_CATEGORY, NO_TITLE, Catalog
from streamrec.settings import ListSettings

PRIOR_UPTAKES = 1.0
PRIOR_MISSES = 1.0
"""Beta(1, 1) prior of every item's uptake rate: a new item is as likely as any to be the best one."""
CHECK_CHUNK_USERS = 256
"""Proposed lists checked for near-duplicates per block of users (bounds the gathered vectors to a few MB)."""
NONE = -1


@dataclass(frozen=True, slots=True)
class Constraints:
    """What a list must respect beyond relevance, for one batch."""

    cosine: float | None
    """Near-duplicate cosine threshold (None: no near-duplicate filter)."""
    per_category: int | None = None
    per_brand: int | None = None
    mmr_lambda: float = 1.0

    @property
    def greedy_for_all(self) -> bool:
        """Whether every list needs the greedy selection (MMR re-ranks every list)."""
        return self.mmr_lambda < 1.0

    @property
    def any(self) -> bool:
        return self.cosine is not None or self.per_category is not None or self.per_brand is not None


@dataclass(slots=True)
class Selection:
    """Per user, the chosen positions in the batch's flat candidate arrays (list order), and which of them are
    exploration picks: ``explored[u]`` of them from position ``explore_at[u]`` on."""

    picked: list[np.ndarray]
    explore_at: list[int]
    explored: list[int]


def select_lists(
    catalog: Catalog,
    pools: Sequence[np.ndarray],
    scores: np.ndarray,
    k: int,
    cfg: ListSettings,
    constraints: Constraints,
    explore: Sequence[bool],
    rng: np.random.Generator,
) -> Selection:
    """Each user's list (positions into the concatenated ``pools``/``scores``), in order.

    ``explore``: per user, whether their list gets exploration slots (behaviour lists do, searches do not).
    """
    n = len(pools)
    lens = np.fromiter(map(len, pools), np.int64, n)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    slots = cfg.exploration_slots if cfg.exploration_slots < k else 0
    exploring = [bool(e) and slots > 0 for e in explore]
    if not constraints.any and not any(exploring) and not constraints.greedy_for_all:
        picked = [
            start + np.argsort(-scores[start : start + length], kind="stable")[:k]
            for start, length in zip(starts.tolist(), lens.tolist(), strict=True)
        ]
        return Selection(picked, [0] * n, [0] * n)
    depth = max(k, cfg.rerank_depth)
    orders = [
        np.argsort(-scores[start : start + length], kind="stable")[:depth]
        for start, length in zip(starts.tolist(), lens.tolist(), strict=True)
    ]
    rows = [pool[order] for pool, order in zip(pools, orders, strict=True)]
    draws = _thompson_draws(catalog, rows, exploring, cfg.exploration_max_exposures, rng)
    lists: list[np.ndarray] = []
    explore_at: list[int] = []
    explored: list[int] = []
    for order, draw, exp in zip(orders, draws, exploring, strict=True):
        chosen, at, n_explored = _propose(order, draw, k, slots if exp else 0)
        lists.append(chosen)
        explore_at.append(at)
        explored.append(n_explored)
    if constraints.greedy_for_all:
        redo = list(range(n))
    else:
        redo = _broken(catalog, [r[c] for r, c in zip(rows, lists, strict=True)], constraints)
    for u in redo:
        start = int(starts[u])
        lists[u], explore_at[u], explored[u] = _greedy(
            catalog, rows[u], scores[start + orders[u]], draws[u], k, slots if exploring[u] else 0, constraints
        )
    picked = [int(start) + order[chosen] for start, order, chosen in zip(starts, orders, lists, strict=True)]
    return Selection(picked, explore_at, explored)


def _thompson_draws(
    catalog: Catalog,
    rows: Sequence[np.ndarray],
    exploring: Sequence[bool],
    max_exposures: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Per user, a Thompson draw of each candidate's uptake rate, NaN where it is not uncertain (or the user does
    not explore); one ``beta`` call for the batch."""
    out = [np.full(len(r), np.nan) for r in rows]
    who = [u for u, e in enumerate(exploring) if e and len(rows[u])]
    if not who:
        return out
    cand = np.concatenate([rows[u] for u in who])
    exposures = catalog.exposures[cand]
    uncertain = exposures < max_exposures
    if not uncertain.any():
        return out
    uptakes = np.minimum(catalog.uptakes[cand], exposures)
    drawn = np.full(len(cand), np.nan)
    drawn[uncertain] = rng.beta(
        PRIOR_UPTAKES + uptakes[uncertain], PRIOR_MISSES + exposures[uncertain] - uptakes[uncertain]
    )
    start = 0
    for u in who:
        out[u] = drawn[start : start + len(rows[u])]
        start += len(rows[u])
    return out


def _propose(order: np.ndarray, draws: np.ndarray, k: int, slots: int) -> tuple[np.ndarray, int, int]:
    """The list when nothing is broken: the best ``k − slots`` (indices into ``order``), then the highest draws among
    the uncertain candidates after them, then (if too few are uncertain) the next best. Returns the list, where its
    exploration picks start and how many there are."""
    main = min(len(order), k - slots)
    if slots == 0 or main >= len(order):
        n = min(len(order), k)
        return np.arange(n), n, 0
    tail = draws[main:]
    uncertain = np.flatnonzero(~np.isnan(tail))
    best = uncertain[np.argsort(-tail[uncertain], kind="stable")[:slots]] + main
    rest = np.setdiff1d(np.arange(main, len(order)), best, assume_unique=True)[: slots - len(best)]
    return np.concatenate([np.arange(main), best, rest]).astype(np.int64), main, len(best)


def _broken(catalog: Catalog, lists: Sequence[np.ndarray], constraints: Constraints) -> list[int]:
    """Users whose proposed list (item rows, in list order) holds near-duplicates or breaks a cap."""
    n = len(lists)
    width = max((len(x) for x in lists), default=0)
    if width < 2:
        return []
    grid = np.full((n, width), NONE, np.int64)
    lens = np.fromiter(map(len, lists), np.int64, n)
    grid[np.arange(width)[None, :] < lens[:, None]] = np.concatenate(lists)
    present = grid >= 0
    rows = np.where(present, grid, 0)
    bad = np.zeros(n, bool)
    if constraints.cosine is not None:
        bad |= _repeats(np.where(present, catalog.title_group[rows], NO_TITLE), 1, NO_TITLE)
        bad |= _close_pairs(catalog, rows, present, constraints.cosine)
    if constraints.per_category is not None:
        bad |= _repeats(np.where(present, catalog.category[rows], NO_CATEGORY), constraints.per_category, NO_CATEGORY)
    if constraints.per_brand is not None:
        bad |= _repeats(np.where(present, catalog.brand[rows], NO_CATEGORY), constraints.per_brand, NO_CATEGORY)
    return np.flatnonzero(bad).tolist()


def _repeats(codes: np.ndarray, cap: int, none: int) -> np.ndarray:
    """Per row, whether some code other than ``none`` occurs more than ``cap`` times."""
    if codes.shape[1] <= cap:
        return np.zeros(len(codes), bool)
    s = np.sort(codes, axis=1)
    return ((s[:, cap:] == s[:, :-cap]) & (s[:, cap:] != none)).any(axis=1)


def _close_pairs(catalog: Catalog, rows: np.ndarray, present: np.ndarray, cosine: float) -> np.ndarray:
    """Per row of ``rows``, whether two of its items' embeddings have at least ``cosine`` (items without a vector
    are never close to anything)."""
    out = np.zeros(len(rows), bool)
    width = rows.shape[1]
    upper = np.triu(np.ones((width, width), bool), 1)
    for a in range(0, len(rows), CHECK_CHUNK_USERS):
        block = rows[a : a + CHECK_CHUNK_USERS]
        ok = present[a : a + CHECK_CHUNK_USERS] & catalog.has_vector[block]
        v = catalog.vectors[block] * ok[:, :, None]
        sims = np.matmul(v, v.transpose(0, 2, 1))
        out[a : a + CHECK_CHUNK_USERS] = ((sims >= cosine) & upper).any(axis=(1, 2))
    return out


def _greedy(
    catalog: Catalog,
    rows: np.ndarray,
    scores: np.ndarray,
    draws: np.ndarray,
    k: int,
    slots: int,
    constraints: Constraints,
) -> tuple[np.ndarray, int, int]:
    """One user's list, slot by slot, from their best candidates (``rows``/``scores``/``draws``, best first):
    ``k − slots`` by relevance (or MMR), then exploration picks by draw, then the next best; each the first that
    is no near-duplicate of an item already listed and breaks no cap. Returns indices into ``rows``, where the
    exploration picks start and how many there are."""
    n = len(rows)
    vectors = catalog.vectors[rows] * catalog.has_vector[rows][:, None]
    sims = vectors @ vectors.T if (constraints.cosine is not None or constraints.greedy_for_all) else None
    titles = catalog.title_group[rows]
    cats = catalog.category[rows]
    brands = catalog.brand[rows]
    free = np.ones(n, bool)
    """Candidates still allowed: not listed, no near-duplicate of a listed one, within the caps."""
    per_cat: dict[int, int] = {}
    per_brand: dict[int, int] = {}
    chosen: list[int] = []

    def take(i: int) -> None:
        chosen.append(i)
        free[i] = False
        if constraints.cosine is not None:
            assert sims is not None
            free[sims[i] >= constraints.cosine] = False
            if titles[i] != NO_TITLE:
                free[titles == titles[i]] = False
        for cap, codes, counts in (
            (constraints.per_category, cats, per_cat),
            (constraints.per_brand, brands, per_brand),
        ):
            code = int(codes[i])
            if cap is not None and code != NO_CATEGORY:
                counts[code] = counts.get(code, 0) + 1
                if counts[code] >= cap:
                    free[codes == code] = False

    main = k - slots
    if constraints.greedy_for_all and n:
        assert sims is not None
        span = float(scores.max() - scores.min())
        relevance = (scores - scores.min()) / span if span > 0 else np.ones(n)
        redundancy = np.zeros(n)
        lam = constraints.mmr_lambda
        while len(chosen) < main and free.any():
            value = np.where(free, lam * relevance - (1.0 - lam) * redundancy, -np.inf)
            i = int(np.argmax(value))
            take(i)
            redundancy = np.maximum(redundancy, sims[i])
    else:
        for i in range(n):
            if len(chosen) >= main:
                break
            if free[i]:
                take(i)
    n_main = len(chosen)
    if slots:
        uncertain = np.flatnonzero(~np.isnan(draws))
        for i in uncertain[np.argsort(-draws[uncertain], kind="stable")].tolist():
            if len(chosen) - n_main >= slots:
                break
            if free[i]:
                take(i)
    n_explored = len(chosen) - n_main
    for i in range(n):
        if len(chosen) >= k:
            break
        if free[i]:
            take(i)
    return np.array(chosen, np.int64), n_main, n_explored
