"""Candidate sources: the item catalogue with its FAISS index, decayed co-visitation, decayed popularity.

Items live in dense rows (``Catalog.row_of``); vectors, prices, categories and timestamps are numpy
arrays indexed by row so features for many candidates are computed in one vectorised gather. FAISS holds
only embedded items (``IndexIDMap2`` over inner product on unit vectors = cosine); an updated item is
replaced in place, so a new or changed item is retrievable as soon as its embedding arrives.

Decayed counters use one global growth factor ``g(t) = 2^((t - t0)/half_life)``: adding ``w·g(t)``
and dividing by ``g(now)`` at read time is exponential decay in O(1) per update, and rankings at a
given moment need no division at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from streamrec.model.events import ItemEmbedding
from streamrec.settings import RetrievalSettings

INITIAL_CAPACITY = 1024
RESCALE_LOG2 = 60.0
"""Rescale decayed counters when the growth factor passes 2^60, far from float64 overflow."""
GROWTH_LOG2_BOUND = 4 * RESCALE_LOG2
"""``g(t)`` is clamped to 2^±240: an event or a read hundreds of half-lives away from the clock's origin (a stray
``ts`` of 0 among current ones, a far-future ``ts``) then weighs next to nothing, instead of overflowing
(OverflowError) or underflowing to a zero divisor — either of which used to crash the worker's core."""
NO_CATEGORY = -1
ANN_MIN_LISTS = 64
ANN_MAX_LISTS = 4096
ANN_LISTS_PER_SQRT = 4.0
"""IVF lists = 4·√n: with ``ann_nprobe`` = 16 a query scans ~4·√n vectors (50k items: ~900 of 50,000)."""
ANN_REBUILD_GROWTH = 2.0
"""Retrain the IVF index each time the catalogue has doubled since the last training."""
ANN_TRAIN_POINTS_PER_LIST = 40
"""k-means training sample per IVF list (FAISS asks for at least 39)."""
NEIGHBOUR = np.dtype([("row", np.int32), ("count", np.float64)])
"""One co-visitation neighbour, packed (12 bytes)."""
COEMB_INIT_SCALE = 0.1
"""Co-embeddings start as small random vectors (norm ≈ this), so the first co-visits decide their direction."""
COEMB_GROWTH = 1.125
"""Co-embedding capacity grows by this factor (at least to the row needed): the first visits reach the end of a
loaded catalogue at once, and doubling from there left half the array allocated, initialised and never used
(~6 MB of a 50,000-item catalogue's 13)."""


class DecayClock:
    """The growth factor ``g(t)`` shared by a family of decayed counters."""

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self.t0: float | None = None

    def log2_growth(self, ts: float) -> float:
        if self.t0 is None:
            self.t0 = ts
        return (ts - self.t0) / self.half_life_s

    def growth(self, ts: float) -> float:
        return float(2.0 ** min(max(self.log2_growth(ts), -GROWTH_LOG2_BOUND), GROWTH_LOG2_BOUND))

    def needs_rescale(self, ts: float) -> bool:
        return self.log2_growth(ts) > RESCALE_LOG2

    def rebase(self, ts: float) -> float:
        """Move ``t0`` to ``ts``; returns the factor every stored counter must be multiplied by."""
        factor = 1.0 / self.growth(ts)
        self.t0 = ts
        return factor


@dataclass(frozen=True, slots=True)
class ItemMeta:
    item_id: str
    title: str
    category: str | None
    brand: str | None
    price: float | None
    ts: float
    source: str


class Catalog:
    """All known items: attributes, embeddings (FAISS) and decayed popularity, by dense row."""

    def __init__(self, cfg: RetrievalSettings) -> None:
        self.cfg = cfg
        self.dim = cfg.embedding_dim
        self.row_of: dict[str, int] = {}
        self.ids: list[str] = []
        """Item id by row (the inverse of ``row_of``)."""
        self.meta: list[ItemMeta | None] = []
        self.category_code: dict[str, int] = {}
        self.category_names: list[str] = []
        cap = INITIAL_CAPACITY
        self.vectors = np.zeros((cap, self.dim), np.float32)
        self.has_vector = np.zeros(cap, bool)
        self.price = np.full(cap, np.nan, np.float32)
        self.price_feature = np.zeros(cap, np.float32)
        """``price_feature(price)`` per row, computed once at upsert rather than per ranking."""
        self.category = np.full(cap, NO_CATEGORY, np.int32)
        self.item_ts = np.zeros(cap, np.float64)
        self.popularity = np.zeros(cap, np.float64)
        self.pop_clock = DecayClock(cfg.popularity_half_life_s)
        self._peak_popularity = 0.0
        self._top_size = cfg.candidates_per_source
        self._top: dict[int, None] = {}
        """The ``_top_size`` most popular rows (ties: lower row first), kept up to date per event."""
        self._top_min: int | None = None
        """The least popular row in ``_top`` (None: recompute before use)."""
        self.index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self._quantizer: faiss.Index | None = None
        self._next_ivf_build = cfg.ann_threshold
        self.rng = np.random.default_rng(cfg.seed)

    def __len__(self) -> int:
        return len(self.row_of)

    @property
    def n_indexed(self) -> int:
        return int(self.index.ntotal)

    def _grow(self) -> None:
        cap = self.vectors.shape[0] * 2
        for name, fill in (
            ("vectors", 0.0),
            ("has_vector", False),
            ("price", np.nan),
            ("price_feature", 0.0),
            ("category", NO_CATEGORY),
            ("item_ts", 0.0),
            ("popularity", 0.0),
        ):
            old = getattr(self, name)
            new = np.full((cap, *old.shape[1:]), fill, old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def ensure(self, item_id: str) -> int:
        """Row of ``item_id``, registering an item known only by id (from an event) if needed."""
        row = self.row_of.get(item_id)
        if row is None:
            row = len(self.row_of)
            if row >= self.vectors.shape[0]:
                self._grow()
            self.row_of[item_id] = row
            self.ids.append(item_id)
            self.meta.append(None)
        return row

    def code_for(self, category: str | None) -> int:
        if category is None:
            return NO_CATEGORY
        code = self.category_code.get(category)
        if code is None:
            code = len(self.category_names)
            self.category_code[category] = code
            self.category_names.append(category)
        return code

    def upsert(self, emb: ItemEmbedding) -> bool:
        """Add or replace an item; an embedding older than the one held is ignored (returns False)."""
        item = emb.item
        row = self.ensure(item.item_id)
        current = self.meta[row]
        if current is not None and item.ts < current.ts:
            return False
        self.meta[row] = ItemMeta(item.item_id, item.title, item.category, item.brand, item.price, item.ts, emb.source)
        self.price[row] = np.nan if item.price is None else item.price
        self.price_feature[row] = price_feature(self.price[row : row + 1])[0]
        self.category[row] = self.code_for(item.category)
        self.item_ts[row] = item.ts
        vector = emb.vector.astype(np.float32)
        norm = float(np.linalg.norm(vector))
        self.vectors[row] = vector / norm if norm > 0 else vector
        ids = np.array([row], dtype=np.int64)
        if self.has_vector[row]:
            self.index.remove_ids(ids)
        self.index.add_with_ids(self.vectors[row : row + 1], ids)
        self.has_vector[row] = True
        if self.index.ntotal >= self._next_ivf_build:
            self._build_ivf()
        return True

    def _build_ivf(self) -> None:
        """Switch from exact search to IVF once the catalogue is large (a query then scans ~nprobe/nlist of it),
        and retrain it as the catalogue grows, so lists stay short and centroids follow the content."""
        rows = np.flatnonzero(self.has_vector[: len(self.row_of)]).astype(np.int64)
        self._next_ivf_build = int(len(rows) * ANN_REBUILD_GROWTH)
        nlist = int(np.clip(ANN_LISTS_PER_SQRT * np.sqrt(len(rows)), ANN_MIN_LISTS, ANN_MAX_LISTS))
        sample = rows
        if len(rows) > nlist * ANN_TRAIN_POINTS_PER_LIST:
            sample = self.rng.choice(rows, nlist * ANN_TRAIN_POINTS_PER_LIST, replace=False)
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(np.ascontiguousarray(self.vectors[sample]))
        ivf.add_with_ids(np.ascontiguousarray(self.vectors[rows]), rows)
        ivf.nprobe = self.cfg.ann_nprobe
        self._quantizer = quantizer  # the IVF index does not own it: keep it alive
        self.index = ivf

    def item_id(self, row: int) -> str:
        return self.ids[row]

    def category_of(self, row: int) -> str | None:
        code = int(self.category[row])
        return None if code == NO_CATEGORY else self.category_names[code]

    def set_category(self, row: int, category: str | None) -> None:
        """Record a category learned from an event's context for an item without an upsert yet."""
        if category is not None and self.category[row] == NO_CATEGORY:
            self.category[row] = self.code_for(category)

    # --- popularity ---------------------------------------------------------------------------------
    def add_popularity(self, row: int, weight: float, ts: float) -> None:
        if self.pop_clock.needs_rescale(ts):
            factor = self.pop_clock.rebase(ts)
            self.popularity *= factor
            self._peak_popularity *= factor
        self.popularity[row] += weight * self.pop_clock.growth(ts)
        # counters only grow between rescales, so the running max is the max (no O(items) scan per ranking)
        self._peak_popularity = max(self._peak_popularity, float(self.popularity[row]))
        self._update_top(row)

    def _update_top(self, row: int) -> None:
        """Keep the most-popular set current: only the row that just grew can enter it (O(1) mostly)."""
        top = self._top
        if row in top:
            if row == self._top_min:
                self._top_min = None
            return
        if len(top) < self._top_size:
            top[row] = None
            self._top_min = None
            return
        weakest = self._weakest()
        pop = self.popularity
        if (pop[row], -row) > (pop[weakest], -weakest):
            del top[weakest]
            top[row] = None
            self._top_min = None

    def _weakest(self) -> int:
        if self._top_min is None:
            rows = np.fromiter(self._top, np.int64, len(self._top))
            order = np.lexsort((-rows, self.popularity[rows]))  # least popular first; ties: higher row first
            self._top_min = int(rows[order[0]])
        return self._top_min

    def popularity_at(self, rows: np.ndarray, ts: float) -> np.ndarray:
        """Decayed popularity of ``rows`` as of ``ts`` (in event-weight units)."""
        if self.pop_clock.t0 is None:
            return np.zeros(len(rows))
        return self.popularity[rows] / self.pop_clock.growth(ts)

    def relative_popularity(self, rows: np.ndarray, ts: float) -> np.ndarray:
        """log-popularity of ``rows`` relative to the most popular item, in [0, 1] (scale-free)."""
        peak = self._peak_popularity
        if peak <= 0.0:
            return np.zeros(len(rows), np.float32)
        g = self.pop_clock.growth(ts)
        return (np.log1p(self.popularity[rows] / g) / np.log1p(peak / g)).astype(np.float32)

    def top_popular(self, n: int) -> np.ndarray:
        """Rows of the ``n`` most popular items right now (most popular first; ties: lower row first)."""
        if n <= len(self._top) or len(self._top) < self._top_size:
            rows = np.fromiter(self._top, np.int64, len(self._top))
        else:  # more than the maintained set: a scan over the catalogue
            size = len(self.row_of)
            rows = np.argpartition(-self.popularity[:size], min(n, size) - 1)[:n]
        pop = self.popularity[rows]
        keep = pop > 0
        rows, pop = rows[keep], pop[keep]
        return rows[np.lexsort((rows, -pop))][:n]

    # --- semantic retrieval -------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One FAISS call for a batch of unit query vectors: (scores, rows), rows = -1 where fewer hits."""
        if self.index.ntotal == 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        k = min(k, int(self.index.ntotal))
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, rows


@dataclass(frozen=True, slots=True)
class CovisScores:
    """A user's co-visited items and their decayed scores, in order of first appearance (ties keep it)."""

    rows: np.ndarray
    scores: np.ndarray
    order: np.ndarray
    """Positions from the highest score down (stable: equal scores keep first-appearance order)."""

    @classmethod
    def empty(cls) -> CovisScores:
        """No co-visited items: one shared, immutable instance, so the users without any cost no allocations."""
        return _NO_COVIS

    def __len__(self) -> int:
        return len(self.rows)

    def top(self, n: int) -> np.ndarray:
        """Rows of the ``n`` best co-visited items, best first."""
        return self.rows[self.order[:n]]

    def rank_values(self) -> np.ndarray:
        """Each item's rank value here (see :func:`covis_rank_table`), in ``rows`` order."""
        return covis_rank_table([self], 1)[1]


def segment_owners(lens: np.ndarray) -> np.ndarray:
    """For segments of these lengths laid end to end (one per user of a batch), each element's segment index."""
    return np.repeat(np.arange(len(lens), dtype=np.int64), lens)


def covis_rank_table(covis: Sequence[CovisScores], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys ``user * width + row`` and rank values of many users' co-visited items, for a batch in one pass.

    An item's rank value is 1/log2(rank + 2), NDCG-style: scale-free across datasets and decay settings, and
    any co-visited item scores above every item that was never co-visited (0).
    """
    lens = np.fromiter(map(len, covis), np.int64, len(covis))
    starts = np.repeat(np.cumsum(lens) - lens, lens)
    rows = np.concatenate([np.zeros(0, np.int64), *(c.rows for c in covis)])
    order = np.concatenate([np.zeros(0, np.int64), *(c.order for c in covis)]) + starts
    rank = np.empty(len(rows), np.int64)
    rank[order] = np.arange(len(rows)) - starts
    return segment_owners(lens) * width + rows, (1.0 / np.log2(rank + 2.0)).astype(np.float32)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


_NO_COVIS = CovisScores(
    _read_only(np.zeros(0, np.int64)), _read_only(np.zeros(0, np.float64)), _read_only(np.zeros(0, np.int64))
)


class CoVisitation:
    """Decayed item-to-item co-visitation counts from users' consecutive interactions (bounded).

    Each item's neighbours are kept as one packed array of (row int32, count float64) records in insertion
    order: 12 bytes a neighbour where a dict of Python floats took ~100, one heap object per item (two arrays and
    a tuple took ~200 bytes more each), and fields scoring reads as they are. A batch of visits opens the items
    it touches as dicts, applies every visit in stream order, and packs them back.
    """

    def __init__(self, cfg: RetrievalSettings) -> None:
        self.window = cfg.cooc_window
        self.max_neighbours = cfg.cooc_max_neighbours
        self.clock = DecayClock(cfg.popularity_half_life_s)
        self._neighbours: dict[int, np.ndarray] = {}
        """Item row → its neighbours (a :data:`NEIGHBOUR` array)."""

    def neighbours(self, row: int) -> dict[int, float]:
        """``row``'s neighbours and their counts (on the clock's current scale), in insertion order."""
        found = self._neighbours.get(row)
        return {} if found is None else dict(zip(found["row"].tolist(), found["count"].tolist(), strict=True))

    def add(self, previous_rows: Sequence[int], row: int, weight: float, ts: float) -> None:
        """``row`` was visited after ``previous_rows`` (most recent last): strengthen both directions."""
        self.add_many([(previous_rows, row, weight, ts)])

    def add_many(self, visits: Sequence[tuple[Sequence[int], int, float, float]]) -> None:
        """:meth:`add` for each ``(previous_rows, row, weight, ts)``, in order."""
        opened: dict[int, dict[int, float]] = {}
        for previous_rows, row, weight, ts in visits:
            if self.clock.needs_rescale(ts):
                factor = self.clock.rebase(ts)
                for packed in self._neighbours.values():
                    packed["count"] *= factor
                for nbrs in opened.values():
                    for key in nbrs:
                        nbrs[key] *= factor
            g = self.clock.growth(ts)
            recent = [r for r in previous_rows[-self.window :] if r != row]
            for distance, prev in enumerate(reversed(recent), start=1):
                w = weight * g / distance
                self._bump(opened, prev, row, w)
                self._bump(opened, row, prev, w)
        for row, nbrs in opened.items():
            packed = np.empty(len(nbrs), NEIGHBOUR)
            packed["row"] = np.fromiter(nbrs.keys(), np.int32, len(nbrs))
            packed["count"] = np.fromiter(nbrs.values(), np.float64, len(nbrs))
            self._neighbours[row] = packed

    def _bump(self, opened: dict[int, dict[int, float]], a: int, b: int, w: float) -> None:
        nbrs = opened.get(a)
        if nbrs is None:
            nbrs = opened[a] = self.neighbours(a)
        nbrs[b] = nbrs.get(b, 0.0) + w
        if len(nbrs) > 2 * self.max_neighbours:
            keep = sorted(nbrs.items(), key=lambda kv: kv[1], reverse=True)[: self.max_neighbours]
            opened[a] = dict(keep)

    def scores(self, seed_rows: Sequence[int], ts: float) -> dict[int, float]:
        """Co-visitation score of every neighbour of the seeds (most recent seed weighs most), decayed to ts."""
        found = self.score_arrays(seed_rows, ts)
        return dict(zip(found.rows.tolist(), found.scores.tolist(), strict=True))

    def score_arrays(self, seed_rows: Sequence[int], ts: float) -> CovisScores:
        """:meth:`scores` as arrays, neighbours in order of first appearance (most recent seed first)."""
        return self.score_arrays_many([seed_rows], ts)[0]

    def score_arrays_many(self, seed_lists: Sequence[Sequence[int]], ts: float | Sequence[float]) -> list[CovisScores]:
        """:meth:`score_arrays` for many users in one pass: their seeds' neighbour arrays are concatenated,
        keyed by (user, row), summed with one ``np.bincount`` and ordered with one ``np.lexsort``.

        ``ts``: one time for all, or one per seed list. The same float64 additions happen in the same order as
        one user at a time (each key's terms in order of appearance, most recent seed first), and ties keep
        first-appearance order, so the results are the same to the bit.
        """
        out = [CovisScores.empty()] * len(seed_lists)
        if self.clock.t0 is None:
            return out
        times = [ts] * len(seed_lists) if isinstance(ts, float | int) else ts
        growth: dict[float, float] = {}
        keys: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        owners: list[int] = []
        factors: list[float] = []
        for user, (seed_rows, t) in enumerate(zip(seed_lists, times, strict=True)):
            g = growth.get(t)
            if g is None:
                g = growth[t] = self.clock.growth(t)
            seeds = list(seed_rows[-self.window :])
            for distance, seed in enumerate(reversed(seeds), start=1):
                found = self._neighbours.get(seed)
                if found is not None:
                    keys.append(found["row"])
                    vals.append(found["count"])
                    owners.append(user)
                    factors.append(1.0 / (distance * g))
        if not keys:
            return out
        lens = np.fromiter(map(len, keys), np.int64, len(keys))
        all_keys = np.concatenate(keys)
        all_vals = np.concatenate(vals) * np.repeat(np.asarray(factors, np.float64), lens)
        width = int(all_keys.max()) + 1
        combined = np.repeat(np.asarray(owners, np.int64), lens) * width + all_keys
        uniq, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
        sums = np.bincount(inverse, weights=all_vals, minlength=len(uniq))
        appearance = np.argsort(first)  # users' blocks in order, each in first-appearance order
        uniq, sums = uniq[appearance], sums[appearance]
        users = uniq // width
        rows = uniq - users * width
        ranked = np.lexsort((np.arange(len(uniq)), -sums, users))  # per user: best first, ties by appearance
        bounds = np.searchsorted(users, np.arange(len(seed_lists) + 1))
        for user in np.unique(users).tolist():
            start, end = int(bounds[user]), int(bounds[user + 1])
            out[user] = CovisScores(rows[start:end], sums[start:end], ranked[start:end] - start)
        return out

    def top(self, seed_rows: Sequence[int], ts: float, n: int, exclude: Iterable[int] = ()) -> dict[int, float]:
        scores = self.scores(seed_rows, ts)
        for row in exclude:
            scores.pop(row, None)
        if len(scores) <= n:
            return scores
        best = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:n]
        return dict(best)


class CoEmbedding:
    """Online item embeddings learned from co-visits (skip-gram with negative sampling, one step per event).

    Co-visitation counts only know pairs that were seen together; embeddings trained on the same pairs also
    relate items through shared neighbours (two films each co-watched with a third), which is what a sparse,
    young co-visitation graph misses. Vectors are small (``coemb_dim``) and updated in place.
    """

    def __init__(self, cfg: RetrievalSettings) -> None:
        self.dim = cfg.coemb_dim
        self.window = cfg.cooc_window
        self.lr = cfg.coemb_learning_rate
        self.negatives = cfg.coemb_negatives
        self.rng = np.random.default_rng(cfg.seed)
        self.min_visits = cfg.coemb_min_visits
        self.vectors = self._init(INITIAL_CAPACITY)
        self.visits = np.zeros(INITIAL_CAPACITY, np.int32)
        self.n = 0

    def _init(self, n: int) -> np.ndarray:
        return (self.rng.standard_normal((n, self.dim)) / math.sqrt(self.dim) * COEMB_INIT_SCALE).astype(np.float32)

    def _ensure(self, row: int) -> None:
        if row >= len(self.vectors):
            grow = max(row + 1, int(len(self.vectors) * COEMB_GROWTH)) - len(self.vectors)
            self.vectors = np.concatenate([self.vectors, self._init(grow)])
            self.visits = np.concatenate([self.visits, np.zeros(grow, np.int32)])
        self.n = max(self.n, row + 1)

    def add(self, previous_rows: Sequence[int], row: int) -> None:
        """``row`` was visited after ``previous_rows``: pull it towards them, push it from random items."""
        self.add_many([(previous_rows, row)])

    def add_many(self, visits: Sequence[tuple[Sequence[int], int]]) -> None:
        """One SGD step for a batch of visits (``(previous_rows, row)``, in stream order).

        Every (item, context) and (item, negative) pair's gradient is taken at the vectors as they were before
        the batch and all are added at once: two gathers and two scatter-adds per batch instead of a dozen
        small array operations per event (the per-event loop was a quarter of the core's time on Taobao).
        """
        if not visits:
            return
        window = self.window
        rows = np.fromiter((row for _, row in visits), np.int64, len(visits))
        contexts = [[r for r in prev[-window:] if r != row] for prev, row in visits]
        self._ensure(max(int(rows.max()), max((max(c) for c in contexts if c), default=0)))
        np.add.at(self.visits, rows, 1)
        lens = np.fromiter(map(len, contexts), np.int64, len(contexts))
        learning = lens > 0
        if not learning.any():
            return
        ctx = np.fromiter((r for c in contexts for r in c), np.int64, int(lens.sum()))
        centres = rows[learning]
        neg = self.rng.integers(0, self.n, size=(len(centres), self.negatives))
        keep = neg != centres[:, None]
        centre = np.concatenate([np.repeat(rows, lens), np.broadcast_to(centres[:, None], neg.shape)[keep]])
        other = np.concatenate([ctx, neg[keep]])
        labels = np.zeros(len(other), np.float32)
        labels[: len(ctx)] = 1.0
        vc = self.vectors[centre]
        vo = self.vectors[other]
        g = (self.lr * (labels - _sigmoid(np.einsum("nd,nd->n", vc, vo))))[:, None]
        np.add.at(self.vectors, centre, g * vo)
        np.add.at(self.vectors, other, g * vc)

    def user_vector(self, seed_rows: Sequence[int]) -> np.ndarray | None:
        """The user's recent items' vectors, the most recent weighing most (unit length)."""
        seeds = [r for r in seed_rows[-self.window :] if r < self.n and self.visits[r] >= self.min_visits]
        if not seeds:
            return None
        w = 1.0 / np.arange(len(seeds), 0, -1, dtype=np.float32)
        u = w @ self.vectors[seeds]
        norm = float(np.linalg.norm(u))
        return u / norm if norm > 0 else None

    def similarity_many(self, users: Sequence[np.ndarray | None], rows: np.ndarray, seg: np.ndarray) -> np.ndarray:
        """Cosine between ``users[seg[i]]`` and row ``rows[i]``'s vector; 0 for unknown rows or no user vector."""
        out = np.zeros(len(rows), np.float32)
        has_user = np.array([u is not None for u in users], bool)
        if not has_user.any():
            return out
        user_vecs = np.stack([u if u is not None else np.zeros(self.dim, np.float32) for u in users])
        known = (rows < self.n) & has_user[seg]
        known[known] = self.visits[rows[known]] >= self.min_visits
        v = self.vectors[rows[known]]
        dots = np.einsum("nd,nd->n", v, user_vecs[seg[known]])
        out[known] = dots / np.maximum(np.linalg.norm(v, axis=1), 1e-12)
        return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


def log1p_safe(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(x, 0.0))


def freshness(item_ts: np.ndarray, now: float, half_life_s: float) -> np.ndarray:
    """1 for an item published now, halving every ``half_life_s``; items from the future count as new."""
    age = np.maximum(now - item_ts, 0.0)
    return np.power(0.5, age / half_life_s)


def price_feature(price: np.ndarray) -> np.ndarray:
    """log-price on a scale where 1.0 ≈ e^LOG_PRICE_SCALE; missing prices are 0."""
    out = np.log1p(np.nan_to_num(price, nan=0.0)) / LOG_PRICE_SCALE
    return out.astype(np.float32)


LOG_PRICE_SCALE = math.log1p(1000.0)
