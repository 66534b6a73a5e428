"""The item catalogue: attributes, embeddings (FAISS) and decayed popularity of every known item, by dense row.

Items live in dense rows (``Catalog.row_of``); vectors, prices, categories and timestamps are numpy
arrays indexed by row so features for many candidates are computed in one vectorised gather. FAISS holds
only embedded items (``IndexIDMap2`` over inner product on unit vectors = cosine); an updated item is
replaced in place, so a new or changed item is retrievable as soon as its embedding arrives.

An item can be withdrawn (sold out, delisted: :meth:`Catalog.withdraw`) and relisted by a later upsert: a
withdrawn item leaves the FAISS index and the popular set, and ``available`` marks it for every other source,
while its attributes, vector and counters stay for when it comes back.

Popularity is a decayed counter on a :class:`~streamrec.model.numeric.DecayClock`: adding ``w·g(t)`` and
dividing by ``g(now)`` at read time is exponential decay in O(1) per update, and rankings at a given moment
need no division at all.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import faiss
import numpy as np

from streamrec.model.events import ItemEmbedding
from streamrec.model.numeric import DecayClock
from streamrec.settings import RetrievalSettings

INITIAL_CAPACITY = 1024
NO_CATEGORY = -1
LOG_PRICE_SCALE = math.log1p(1000.0)
ANN_MIN_LISTS = 64
ANN_MAX_LISTS = 4096
ANN_LISTS_PER_SQRT = 4.0
"""IVF lists = 4·√n: with ``ann_nprobe`` = 16 a query scans ~4·√n vectors (50k items: ~900 of 50,000)."""
ANN_REBUILD_GROWTH = 2.0
"""Retrain the IVF index each time the catalogue has doubled since the last training."""
ANN_TRAIN_POINTS_PER_LIST = 40
"""k-means training sample per IVF list (FAISS asks for at least 39)."""
NO_TITLE = -1
_NOT_WORDS = re.compile(r"[\W_]+")


def normalised_title(title: str) -> str:
    """A title as the near-duplicate check compares it: lower case, runs of punctuation and spaces as one space.

    >>> normalised_title("  Beatline  Bluetooth-Headset! "), normalised_title("beatline bluetooth headset")
    ('beatline bluetooth headset', 'beatline bluetooth headset')
    """
    return _NOT_WORDS.sub(" ", title.lower()).strip()


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
        self.brand_code: dict[str, int] = {}
        self.title_code: dict[str, int] = {}
        cap = INITIAL_CAPACITY
        self.vectors = np.zeros((cap, self.dim), np.float32)
        self.has_vector = np.zeros(cap, bool)
        self.price = np.full(cap, np.nan, np.float32)
        self.price_feature = np.zeros(cap, np.float32)
        """``price_feature(price)`` per row, computed once at upsert rather than per ranking."""
        self.category = np.full(cap, NO_CATEGORY, np.int32)
        self.brand = np.full(cap, NO_CATEGORY, np.int32)
        self.title_group = np.full(cap, NO_TITLE, np.int32)
        """Rows with the same normalised (non-empty) title share a group: near-duplicates."""
        self.item_ts = np.zeros(cap, np.float64)
        self.popularity = np.zeros(cap, np.float64)
        self.available = np.ones(cap, bool)
        """False while an item is withdrawn: no source may offer it."""
        self.withdrawn_at: dict[int, float] = {}
        """Withdrawn rows → the withdrawal's time (-inf for a tombstone): an upsert older than it is stale."""
        self.exposures = np.zeros(cap, np.int64)
        """Times each item was in a published list (exploration's estimate of how well it is known)."""
        self.uptakes = np.zeros(cap, np.int64)
        """Times a user took an item from the list last published to them."""
        self.version = 0
        """Bumped whenever an item's attributes or availability change (what rule masks are compiled from)."""
        self.pop_clock = DecayClock(cfg.item_half_life_s)
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
            ("brand", NO_CATEGORY),
            ("title_group", NO_TITLE),
            ("item_ts", 0.0),
            ("popularity", 0.0),
            ("available", True),
            ("exposures", 0),
            ("uptakes", 0),
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

    @staticmethod
    def _code(codes: dict[str, int], name: str | None, none: int) -> int:
        if not name:
            return none
        return codes.setdefault(name, len(codes))

    def upsert(self, emb: ItemEmbedding) -> bool:
        """Add or replace an item, relisting it if it was withdrawn; an embedding older than the version held (or
        than the withdrawal) is ignored (returns False). After a tombstone the item is gone: any upsert relists it."""
        item = emb.item
        row = self.ensure(item.item_id)
        current = self.meta[row]
        withdrawn_at = self.withdrawn_at.get(row)
        if current is not None and item.ts < current.ts and withdrawn_at != -math.inf:
            return False
        if withdrawn_at is not None and item.ts < withdrawn_at:
            return False
        self.meta[row] = ItemMeta(item.item_id, item.title, item.category, item.brand, item.price, item.ts, emb.source)
        self.price[row] = np.nan if item.price is None else item.price
        self.price_feature[row] = price_feature(self.price[row : row + 1])[0]
        self.category[row] = self.code_for(item.category)
        self.brand[row] = self._code(self.brand_code, item.brand, NO_CATEGORY)
        self.title_group[row] = self._code(self.title_code, normalised_title(item.title), NO_TITLE)
        self.item_ts[row] = item.ts
        vector = emb.vector.astype(np.float32)
        norm = float(np.linalg.norm(vector))
        self.vectors[row] = vector / norm if norm > 0 else vector
        ids = np.array([row], dtype=np.int64)
        if self.has_vector[row] and self.available[row]:
            self.index.remove_ids(ids)
        self.index.add_with_ids(self.vectors[row : row + 1], ids)
        self.has_vector[row] = True
        self.version += 1
        if not self.available[row]:
            self.available[row] = True
            del self.withdrawn_at[row]
            self._rebuild_top()
        if self.index.ntotal >= self._next_ivf_build:
            self._build_ivf()
        return True

    def withdraw(self, item_id: str, ts: float | None = None) -> bool:
        """Take an item out of every candidate source until a later upsert relists it; returns False when it was
        withdrawn already or the withdrawal is older than the version held (``ts`` None: a tombstone, always
        applies). An item known only from events is withdrawn too (co-visitation and popularity offer those)."""
        row = self.ensure(item_id)
        current = self.meta[row]
        if ts is not None and current is not None and ts < current.ts:
            return False
        if not self.available[row]:
            self.withdrawn_at[row] = max(self.withdrawn_at[row], -math.inf if ts is None else ts)
            return False
        self.available[row] = False
        self.withdrawn_at[row] = -math.inf if ts is None else ts
        if self.has_vector[row]:
            self.index.remove_ids(np.array([row], dtype=np.int64))
        if row in self._top:
            self._rebuild_top()
        self.version += 1
        return True

    @property
    def n_withdrawn(self) -> int:
        return len(self.withdrawn_at)

    def record_exposure(self, rows: np.ndarray) -> None:
        """Rows listed in published lists (a row listed twice counts twice)."""
        np.add.at(self.exposures, rows, 1)

    def _build_ivf(self) -> None:
        """Switch from exact search to IVF once the catalogue is large (a query then scans ~nprobe/nlist of it),
        and retrain it as the catalogue grows, so lists stay short and centroids follow the content."""
        size = len(self.row_of)
        rows = np.flatnonzero(self.has_vector[:size] & self.available[:size]).astype(np.int64)
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
            self.version += 1

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
        """Keep the most-popular set current: only the row that just grew can enter it (O(1) mostly).

        Withdrawn items never enter: the set is the most popular *available* items.
        """
        top = self._top
        if not self.available[row]:
            return
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

    def _rebuild_top(self) -> None:
        """The most-popular set recomputed from the counters (after an item was withdrawn or relisted): the same
        set the per-event upkeep keeps, as rows only enter it by growing past its weakest."""
        size = len(self.row_of)
        pop = self.popularity[:size]
        rows = np.flatnonzero((pop > 0) & self.available[:size])
        rows = rows[np.lexsort((rows, -pop[rows]))][: self._top_size]
        self._top = dict.fromkeys(rows.tolist())
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
            pop = np.where(self.available[:size], self.popularity[:size], 0.0)
            rows = np.argpartition(-pop, min(n, size) - 1)[:n]
        pop = self.popularity[rows]
        keep = (pop > 0) & self.available[rows]
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


def price_feature(price: np.ndarray) -> np.ndarray:
    """log-price on a scale where 1.0 ≈ e^LOG_PRICE_SCALE; missing prices are 0."""
    out = np.log1p(np.nan_to_num(price, nan=0.0)) / LOG_PRICE_SCALE
    return out.astype(np.float32)
