"""The recommender core: learn from a micro-batch of events, then refresh the touched users' top-k.

Plain Python, no Kafka: the Faust agents, the evaluation harness and the tests all drive this one class.
Per batch it (1) embeds search queries in one call, (2) walks the events in order — so each user's events
apply in sequence — turning every labelled event into a training example scored against the user's state
*before* the event, then folding the event into the profile, co-visitation and popularity, (3) takes one
SGD step on the fusion ranker for the whole batch, and (4) retrieves and ranks candidates for all touched
users with one FAISS call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .events import ITEM_EVENT_TYPES, Event, ItemEmbedding
from .profiles import ProfileStore, UserProfile, apply_event, unit
from .ranker import FEATURES, FusionRanker
from .retrieval import Catalog, CoEmbedding, CoVisitation, freshness
from .settings import Settings

QueryEncoder = Callable[[Sequence[str]], np.ndarray]
F_INDEX = {name: i for i, name in enumerate(FEATURES)}
SEARCH_KIND = "search"
BEHAVIOUR_KIND = "behaviour"


def member(rows: np.ndarray, few: Sequence[int]) -> np.ndarray:
    """``np.isin(rows, few)`` for the short lists used here (recent, purchased), without isin's sorting."""
    if not len(few):
        return np.zeros(len(rows), bool)
    return (rows[:, None] == np.asarray(few, rows.dtype)[None, :]).any(axis=1)


def covisit_rank_feature(covis: dict[int, float], rows: np.ndarray) -> np.ndarray:
    """Each row's rank among the user's co-visited items as 1/log2(rank + 2), NDCG-style; 0 if not co-visited.

    Scale-free across datasets and decay settings, and any co-visited item scores above every item that was
    never co-visited. Ties keep the co-visitation order (a stable sort), as ``sorted`` would.
    """
    keys = np.fromiter(covis.keys(), np.int64, len(covis))
    vals = np.fromiter(covis.values(), np.float64, len(covis))
    rank = np.empty(len(keys), np.int64)
    rank[np.argsort(-vals, kind="stable")] = np.arange(len(keys))
    sorter = np.argsort(keys)
    pos = np.searchsorted(keys, rows, sorter=sorter).clip(max=len(keys) - 1)
    hit = keys[sorter[pos]] == rows
    out = np.zeros(len(rows), np.float32)
    out[hit] = 1.0 / np.log2(rank[sorter[pos[hit]]] + 2.0)
    return out


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    score: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One message on the ``recommendations`` topic."""

    user_id: str
    items: tuple[ScoredItem, ...]
    model_version: str
    generated_at: float
    event_ts: float
    kind: str = BEHAVIOUR_KIND
    query: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "user_id": self.user_id,
            "kind": self.kind,
            "items": [
                {"item_id": i.item_id, "score": round(i.score, 6), "reasons": list(i.reasons)} for i in self.items
            ],
            "model_version": self.model_version,
            "generated_at": self.generated_at,
            "event_ts": self.event_ts,
        }
        if self.query is not None:
            out["query"] = self.query
        return out


@dataclass(slots=True)
class BatchResult:
    recommendations: list[Recommendation] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    """Events skipped because their offset was already applied (at-least-once redelivery)."""
    loss: float = 0.0


@dataclass(slots=True)
class _Request:
    profile: UserProfile
    ts: float
    query: str | None = None
    query_vector: np.ndarray | None = None


class Recommender:
    """Catalogue + co-visitation + popularity + fusion ranker, updated online."""

    def __init__(self, settings: Settings, encode_queries: QueryEncoder | None = None) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)
        self.covis = CoVisitation(settings)
        self.coemb = CoEmbedding(settings)
        self.ranker = FusionRanker(settings)
        self.encode_queries = encode_queries
        self.rng = np.random.default_rng(settings.seed)
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        """Embeddings of recent distinct queries: search traffic repeats its head queries all the time."""
        self._pools: OrderedDict[str, np.ndarray] = OrderedDict()
        """Each recent user's last candidate pool: learning happens against what retrieval offered."""
        self.clock = 0.0
        """Latest event time seen: 'now' for popularity and freshness, so replays are reproducible."""

    # --- catalogue ----------------------------------------------------------------------------------
    def upsert_item(self, emb: ItemEmbedding) -> bool:
        return self.catalog.upsert(emb)

    # --- features -----------------------------------------------------------------------------------
    def features(
        self,
        profile: UserProfile,
        rows: np.ndarray,
        now: float,
        covis: dict[int, float] | None = None,
        query_vector: np.ndarray | None = None,
        recent_rows: list[int] | None = None,
    ) -> np.ndarray:
        """Feature matrix (len(rows), F) of ``rows`` for ``profile`` as it is now."""
        cat = self.catalog
        vecs = cat.vectors[rows]
        x = np.zeros((len(rows), len(FEATURES)), np.float32)
        x[:, F_INDEX["sim_long"]] = vecs @ unit(profile.long_term)
        x[:, F_INDEX["sim_intent"]] = vecs @ unit(profile.intent)
        if query_vector is not None:
            x[:, F_INDEX["sim_query"]] = vecs @ query_vector
        if recent_rows is None:
            recent_rows = self._rows(profile.recent)
        if covis is None:
            covis = self.covis.scores(recent_rows, now)
        if covis:
            x[:, F_INDEX["covisit"]] = covisit_rank_feature(covis, rows)
        total = sum(profile.categories.values())
        if total > 0.0:
            # the user's share per category code, looked up for every row at once (last slot: no category)
            share = np.zeros(len(cat.category_names) + 1, np.float32)
            for name, w in profile.categories.items():
                code = cat.category_code.get(name)
                if code is not None:
                    share[code] = w / total
            x[:, F_INDEX["category"]] = share[cat.category[rows]]
        x[:, F_INDEX["popularity"]] = cat.relative_popularity(rows, now)
        x[:, F_INDEX["price"]] = cat.price_feature[rows]
        x[:, F_INDEX["freshness"]] = freshness(cat.item_ts[rows], now, self.settings.freshness_half_life_s) * (
            cat.item_ts[rows] > 0
        )
        x[:, F_INDEX["coemb"]] = self.coemb.similarity(self.coemb.user_vector(recent_rows), rows)
        x[:, F_INDEX["seen"]] = member(rows, recent_rows)
        return x

    def _rows(self, item_ids: Sequence[str]) -> list[int]:
        row_of = self.catalog.row_of
        return [row_of[i] for i in item_ids if i in row_of]

    def _query_vectors(self, queries: Sequence[str]) -> dict[str, np.ndarray]:
        """Unit embeddings of search queries: repeated queries come from an LRU cache, the rest in one call."""
        out: dict[str, np.ndarray] = {}
        if not queries or self.encode_queries is None:
            return out
        cache = self._query_cache
        missing = []
        for q in dict.fromkeys(queries):
            v = cache.get(q)
            if v is None:
                missing.append(q)
            else:
                cache.move_to_end(q)
                out[q] = v
        if missing:
            for q, v in zip(missing, self.encode_queries(missing), strict=True):
                out[q] = cache[q] = unit(np.asarray(v, np.float32))
            while len(cache) > self.settings.query_cache_size:
                cache.popitem(last=False)
        return out

    # --- learning -----------------------------------------------------------------------------------
    def _negatives(self, profile: UserProfile, positive: int, pool: np.ndarray) -> list[int]:
        """Shown-not-taken + candidate-pool + uniform negatives for one labelled event (no duplicates)."""
        s = self.settings
        chosen = [r for r in self._rows(profile.shown) if r != positive][: s.negatives_shown]
        if len(pool):
            draws = self.rng.choice(pool, min(len(pool), s.negatives_pool + len(chosen) + 1), replace=False)
            chosen += [int(r) for r in draws if r != positive and r not in chosen][: s.negatives_pool]
        n_items = len(self.catalog)
        if n_items > 1 and s.negatives_sampled > 0:
            draws = self.rng.integers(0, n_items, size=s.negatives_sampled)
            chosen += [int(r) for r in dict.fromkeys(draws.tolist()) if r != positive and r not in chosen]
        return chosen

    def _remember(self, profile: UserProfile, cands: np.ndarray, order: np.ndarray, k: int) -> None:
        """Keep the published list on the profile and the candidate pool in a bounded in-memory cache."""
        item_id = self.catalog.item_id
        profile.shown = [item_id(int(cands[j])) for j in order[:k]]
        cache = self._pools
        cache[profile.user_id] = cands.astype(np.int32)
        cache.move_to_end(profile.user_id)
        while len(cache) > self.settings.candidate_cache_users:
            cache.popitem(last=False)

    def learn(
        self,
        events: Sequence[Event],
        store: ProfileStore,
        positions: Sequence[tuple[int, int] | None] | None = None,
    ) -> tuple[BatchResult, dict[str, _Request], list[_Request]]:
        """Fold a batch into state and step the ranker once; returns who needs fresh recommendations."""
        result = BatchResult()
        qvecs = self._query_vectors([e.query for e in events if e.type == "search" and e.query])
        profiles: dict[str, UserProfile] = {}
        behaviour: dict[str, _Request] = {}
        searches: list[_Request] = []
        pos_x: list[np.ndarray] = []
        neg_x: list[np.ndarray] = []
        weights: list[float] = []
        for idx, event in enumerate(events):
            profile = profiles.get(event.user_id) or store.get(event.user_id)
            if profile is None:
                profile = UserProfile.new(event.user_id, self.settings.embedding_dim)
            profiles[event.user_id] = profile
            part, off = (positions[idx] or (None, None)) if positions is not None else (None, None)
            if profile.already_applied(part, off):
                result.duplicates += 1
                continue
            self.clock = max(self.clock, event.ts)
            if event.type in ITEM_EVENT_TYPES and event.item_id is not None:
                row = self.catalog.ensure(event.item_id)
                if event.context and isinstance(event.context.get("category"), str):
                    self.catalog.set_category(row, event.context["category"])
                pool = self._pools.get(event.user_id)
                # Learn only from choices the ranker could have made: the taken item was among the candidates
                # it ranked. Items retrieval never offered would teach it to distrust its own sources.
                learnable = self.settings.learn and pool is not None and row in pool
                negs = self._negatives(profile, row, pool) if learnable else []
                if negs:
                    rows = np.array([row, *negs], dtype=np.int64)
                    x = self.features(profile, rows, event.ts)
                    pos_x.append(x[0])
                    neg_x.append(x[1:])
                    weights.append(self.settings.event_weight(event.type))
                previous = self._rows(profile.recent)
                vector = self.catalog.vectors[row] if self.catalog.has_vector[row] else None
                apply_event(profile, event, vector, self.catalog.category_of(row), self.settings, part, off)
                weight = self.settings.event_weight(event.type)
                self.covis.add(previous, row, weight, event.ts)
                self.coemb.add(previous, row)
                self.catalog.add_popularity(row, weight, event.ts)
                behaviour[event.user_id] = _Request(profile, event.ts)
            else:  # search: update intent with the query, answer with query-aware results
                qv = qvecs.get(event.query or "")
                apply_event(profile, event, qv, None, self.settings, part, off)
                searches.append(_Request(profile, event.ts, event.query, qv))
            result.applied += 1
        if pos_x:
            m = max(len(n) for n in neg_x)
            neg = np.zeros((len(neg_x), m, len(FEATURES)), np.float32)
            for i, n in enumerate(neg_x):
                neg[i, : len(n)] = n
            result.loss = self.ranker.step(
                np.stack(pos_x),
                neg,
                np.array([len(n) for n in neg_x], np.int64),
                np.array(weights, np.float32),
            )
        for profile in profiles.values():
            store.put(profile)
        return result, behaviour, searches

    # --- recommending -------------------------------------------------------------------------------
    def recommend(
        self,
        profiles: Sequence[UserProfile],
        now: float | None = None,
        query_vectors: Sequence[np.ndarray | None] | None = None,
        k: int | None = None,
        reasons: bool = True,
        remember: bool = False,
    ) -> list[list[ScoredItem]]:
        """Top-k for each profile (one FAISS call for all); query vectors make it a search.

        ``remember`` stores the list and a sample of the remaining candidates on each profile: what the
        ranker learns against when the user's next labelled event arrives.
        """
        k = k or self.settings.top_k
        now = self.clock if now is None else now
        n_cand = self.settings.candidates_per_source
        qvs = list(query_vectors) if query_vectors is not None else [None] * len(profiles)
        retrieval = np.zeros((len(profiles), self.settings.embedding_dim), np.float32)
        blend = self.settings.search_query_weight
        for i, (p, qv) in enumerate(zip(profiles, qvs, strict=True)):
            taste = unit(unit(p.long_term) + unit(p.intent))
            retrieval[i] = unit(blend * qv + (1.0 - blend) * taste) if qv is not None else taste
        _, sem_rows = self.catalog.search(retrieval, n_cand)
        popular = self.catalog.top_popular(n_cand)
        item_id = self.catalog.item_id
        out: list[list[ScoredItem]] = []
        for i, profile in enumerate(profiles):
            seeds = self._rows(profile.recent)
            covis = self.covis.scores(seeds, now)
            covis_top = sorted(covis, key=covis.__getitem__, reverse=True)[:n_cand]
            cands = np.unique(
                np.concatenate([sem_rows[i][sem_rows[i] >= 0] if len(sem_rows) else [], covis_top, popular]).astype(
                    np.int64
                )
            )
            excluded = self._rows(profile.purchased) if self.settings.exclude_purchased else []
            if self.settings.exclude_seen and qvs[i] is None:
                excluded += seeds
            if excluded:
                cands = cands[~member(cands, excluded)]
            if len(cands) == 0:
                out.append([])
                continue
            x = self.features(profile, cands, now, covis, qvs[i], seeds)
            scores = self.ranker.score(x)
            order = np.argsort(-scores, kind="stable")
            top = order[:k]
            if remember:
                self._remember(profile, cands, order, k)
            why = self.ranker.reasons_many(x[top]) if reasons else [()] * len(top)
            out.append(
                [
                    ScoredItem(item_id(int(j)), float(sc), r)
                    for j, sc, r in zip(cands[top].tolist(), scores[top].tolist(), why, strict=True)
                ]
            )
        return out

    def process(
        self,
        events: Sequence[Event],
        store: ProfileStore,
        positions: Sequence[tuple[int, int] | None] | None = None,
    ) -> BatchResult:
        """Learn from a batch, then publish-ready top-k for every user it touched (and every search)."""
        result, behaviour, searches = self.learn(events, store, positions)
        requests = list(behaviour.values()) + searches
        if not requests:
            return result
        lists = self.recommend(
            [r.profile for r in requests], self.clock, [r.query_vector for r in requests], remember=True
        )
        now = time.time()
        version = self.ranker.version
        for req, items in zip(requests, lists, strict=True):
            kind = SEARCH_KIND if req.query is not None else BEHAVIOUR_KIND
            store.put(req.profile)
            result.recommendations.append(
                Recommendation(req.profile.user_id, tuple(items), version, now, req.ts, kind, req.query)
            )
        return result

    def forget(self, user_id: str, store: ProfileStore) -> None:
        """Delete everything kept about a user (privacy requests): the profile and the in-memory candidate pool.

        Aggregates the user's events contributed to (co-visitation, popularity, co-embeddings, the ranker's
        weights) are not per-user and stay; a later event for the user starts a fresh profile.
        """
        store.delete(user_id)
        self._pools.pop(user_id, None)

    def process_with_forgets(
        self,
        events: Sequence[Event],
        store: ProfileStore,
        positions: Sequence[tuple[int, int] | None] | None = None,
    ) -> tuple[BatchResult, list[str]]:
        """:meth:`process`, honouring ``forget_user`` requests in stream order; also returns who was forgotten.

        The batch is cut at each forget: events before it are processed, then the user is forgotten and any
        list computed for them earlier in the batch is dropped, so nothing about them is published after the
        request; their events after it (same batch or later) start a fresh profile.
        """
        total = BatchResult()
        forgotten: list[str] = []
        start = 0
        for idx in [i for i, e in enumerate(events) if e.is_forget] + [len(events)]:
            if idx > start:
                part = self.process(events[start:idx], store, positions[start:idx] if positions is not None else None)
                total.recommendations += part.recommendations
                total.applied += part.applied
                total.duplicates += part.duplicates
                total.loss += part.loss
            if idx < len(events):
                user_id = events[idx].user_id
                self.forget(user_id, store)
                total.recommendations = [r for r in total.recommendations if r.user_id != user_id]
                forgotten.append(user_id)
            start = idx + 1
        return total, forgotten
