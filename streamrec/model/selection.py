"""From scored candidates to the list a user sees: no near-duplicates, caps per category and brand, optional MMR
diversity, and exploration slots.

Most lists need none of the slow parts. Each user's ``rerank_depth`` best candidates keep only the best item of
each normalised title (one sort for the batch); then each user's best ``k`` (less the exploration slots) plus the
exploration picks are proposed for the whole batch at once, and the proposed lists are checked for close
embeddings and caps in a few array operations. Only users whose proposal breaks a constraint, or every user when
MMR is on, go through the greedy selection, over their ``rerank_depth`` best candidates only. Both give the same
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
    if constraints.cosine is not None:
        orders = _best_of_each_title(catalog, pools, orders)
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


def _best_of_each_title(catalog: Catalog, pools: Sequence[np.ndarray], orders: list[np.ndarray]) -> list[np.ndarray]:
    """Each user's ranked candidates without the later ones of a title already seen: a title is represented by its
    best-scored item. Titles are an equivalence (unlike close embeddings), so this is the greedy filter's answer
    for titles, for the whole batch in one sort; a shop with hundreds of items under one title then costs no
    per-user walk."""
    n = len(orders)
    width = max((len(o) for o in orders), default=0)
    if width < 2:
        return orders
    lens = np.fromiter(map(len, orders), np.int64, n)
    present = np.arange(width)[None, :] < lens[:, None]
    grid = np.full((n, width), NO_TITLE, np.int64)
    grid[present] = catalog.title_group[np.concatenate([p[o] for p, o in zip(pools, orders, strict=True)])]
    by_title = np.argsort(grid, axis=1, kind="stable")  # within a title, best first
    sorted_titles = np.take_along_axis(grid, by_title, axis=1)
    first = np.ones((n, width), bool)
    first[:, 1:] = (sorted_titles[:, 1:] != sorted_titles[:, :-1]) | (sorted_titles[:, 1:] == NO_TITLE)
    keep = np.empty_like(first)
    np.put_along_axis(keep, by_title, first, axis=1)
    if keep[present].all():
        return orders
    return [o[keep[u, : len(o)]] for u, o in enumerate(orders)]


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
    if len(best) == slots:
        return np.concatenate([np.arange(main), best]).astype(np.int64), main, len(best)
    left = np.ones(len(order), bool)
    left[:main] = False
    left[best] = False
    rest = np.flatnonzero(left)[: slots - len(best)]
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
    if constraints.cosine is not None:  # titles are unique already (_best_of_each_title)
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
    or a title are never close to anything: :func:`_titled`)."""
    out = np.zeros(len(rows), bool)
    width = rows.shape[1]
    upper = np.triu(np.ones((width, width), bool), 1)
    for a in range(0, len(rows), CHECK_CHUNK_USERS):
        block = rows[a : a + CHECK_CHUNK_USERS]
        ok = present[a : a + CHECK_CHUNK_USERS] & catalog.has_vector[block] & _titled(catalog, block)
        v = catalog.vectors[block] * ok[:, :, None]
        sims = np.matmul(v, v.transpose(0, 2, 1))
        out[a : a + CHECK_CHUNK_USERS] = ((sims >= cosine) & upper).any(axis=(1, 2))
    return out


def _titled(catalog: Catalog, rows: np.ndarray) -> np.ndarray:
    """Which items may be near-duplicates by embedding: those with a title. A title-less item's text is built from
    its category, brand and price band, so a close embedding means the same attributes, not the same product."""
    return catalog.title_group[rows] != NO_TITLE


def _close(sims: np.ndarray | None, cosine: float | None, titled: np.ndarray) -> list[list[int]]:
    """For each candidate, the other ``titled`` ones whose embeddings have a cosine ≥ ``cosine`` with it (few, as a
    rule; :func:`_titled`)."""
    n = 0 if sims is None else len(sims)
    out: list[list[int]] = [[] for _ in range(n)]
    if cosine is None or sims is None or n < 2:
        return out
    close = (sims >= cosine) & titled[:, None] & titled[None, :]
    np.fill_diagonal(close, False)
    for a, b in zip(*np.nonzero(close), strict=True):
        out[int(a)].append(int(b))
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
    exploration picks start and how many there are.

    Titles are unique here already (:func:`_best_of_each_title`); close embeddings come from one matrix product;
    the walk itself is plain Python over at most ``rerank_depth`` candidates, with the counts per category and
    brand in dicts.
    """
    n = len(rows)
    mmr = constraints.greedy_for_all
    sims = None
    if constraints.cosine is not None or mmr:
        vectors = catalog.vectors[rows] * catalog.has_vector[rows][:, None]
        sims = vectors @ vectors.T
    close = _close(sims, constraints.cosine, _titled(catalog, rows))
    caps = [
        (cap, codes.tolist(), {})
        for cap, codes in (
            (constraints.per_category, catalog.category[rows]),
            (constraints.per_brand, catalog.brand[rows]),
        )
        if cap is not None
    ]
    free = [True] * n
    """Candidates not listed and no near-duplicate by embedding of a listed one."""
    chosen: list[int] = []

    def allowed(i: int) -> bool:
        return free[i] and all(codes[i] == NO_CATEGORY or counts.get(codes[i], 0) < cap for cap, codes, counts in caps)

    def take(i: int) -> None:
        chosen.append(i)
        free[i] = False
        for j in close[i]:
            free[j] = False
        for _, codes, counts in caps:
            counts[codes[i]] = counts.get(codes[i], 0) + 1

    main = k - slots
    if mmr and n:
        assert sims is not None
        span = float(scores.max() - scores.min())
        relevance = (scores - scores.min()) / span if span > 0 else np.ones(n)
        redundancy = np.zeros(n)
        lam = constraints.mmr_lambda
        while len(chosen) < main:
            ok = np.array([allowed(i) for i in range(n)])
            if not ok.any():
                break
            i = int(np.argmax(np.where(ok, lam * relevance - (1.0 - lam) * redundancy, -np.inf)))
            take(i)
            redundancy = np.maximum(redundancy, sims[i])
    else:
        for i in range(n):
            if len(chosen) >= main:
                break
            if allowed(i):
                take(i)
    n_main = len(chosen)
    if slots:
        uncertain = np.flatnonzero(~np.isnan(draws))
        for i in uncertain[np.argsort(-draws[uncertain], kind="stable")].tolist():
            if len(chosen) - n_main >= slots:
                break
            if allowed(i):
                take(i)
    n_explored = len(chosen) - n_main
    for i in range(n):
        if len(chosen) >= k:
            break
        if allowed(i):
            take(i)
    return np.array(chosen, np.int64), n_main, n_explored
