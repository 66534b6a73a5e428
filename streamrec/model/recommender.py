"""The recommender core: learn from a micro-batch of events, then refresh the touched users' top-k.

Plain Python, no Kafka: the Faust agents, the evaluation harness and the tests all drive this one class.
Per batch it (1) embeds search queries in one call, (2) walks the events in order — so each user's events
apply in sequence — turning every labelled event into a training example scored against the user's state
*before* the event, then folding the event into the profile and popularity, (3) scores every item event
against the list last published to its user (online quality, :class:`~streamrec.model.metrics.OnlineScores`)
and takes one SGD step on the fusion ranker for the whole batch, (4) folds the batch into the item-to-item
statistics (co-visitation, co-embeddings) and the users' sessions (session neighbours), and (5) retrieves and
ranks candidates for all touched users with one FAISS call, and selects each list (:mod:`.selection`: no
near-duplicates, rule caps, exploration slots) within the business rules in force (:mod:`.rules`) and without
withdrawn items.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamrec.model.candidates import CANDIDATE_SOURCES, candidate_pools, retrieval_queries
from streamrec.model.catalog import Catalog
from streamrec.model.coembedding import CoEmbedding
from streamrec.model.covisitation import CoVisitation, CovisScores
from streamrec.model.events import HIDE, ITEM_EVENT_TYPES, Event, ItemEmbedding
from streamrec.model.features import ItemState, UserContext, feature_matrix, taste, tastes
from streamrec.model.itemstats import ItemUpdate
from streamrec.model.metrics import OnlineScores, is_repeat
from streamrec.model.numeric import unit
from streamrec.model.offers import OfferCache, PublishedLists
from streamrec.model.profiles import ProfileStore, UserProfile, apply_event, apply_hide
from streamrec.model.ranker import FEATURES, FusionRanker
from streamrec.model.rules import RuleSet, boosted, code_mask, code_multipliers
from streamrec.model.selection import Constraints, select_lists
from streamrec.model.sessions import SessionIndex
from streamrec.settings import Settings

QueryEncoder = Callable[[Sequence[str]], np.ndarray]
SEARCH_KIND = "search"
BEHAVIOUR_KIND = "behaviour"
EXPLORING = "new — exploring"
"""The reason an exploration pick carries (:mod:`.selection`)."""
EXPLORATION_STREAM = 1
"""Exploration draws from its own random stream (seeded with ``seed``), so turning it on or off leaves every other
draw (negatives, co-embeddings) where it was."""
LIST_KINDS = (BEHAVIOUR_KIND, SEARCH_KIND)
"""Kinds of published list, by the code the offer cache keeps with each (online quality is split by them)."""
BEHAVIOUR_CODE, SEARCH_CODE = LIST_KINDS.index(BEHAVIOUR_KIND), LIST_KINDS.index(SEARCH_KIND)
EXPLAIN_CATEGORIES = 5
"""Top categories :meth:`Recommender.explain` shows."""


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    score: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RankedList:
    """One user's top-k as parallel lists (cheap to build for hundreds of users per batch).

    Iterating or indexing gives :class:`ScoredItem` objects.
    """

    item_ids: list[str]
    scores: list[float]
    reasons: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, i: int) -> ScoredItem:
        return ScoredItem(self.item_ids[i], self.scores[i], self.reasons[i])

    def __iter__(self) -> Iterator[ScoredItem]:
        return map(ScoredItem, self.item_ids, self.scores, self.reasons)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One message on the ``recommendations`` topic."""

    user_id: str
    items: RankedList
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
                {"item_id": i, "score": round(sc, 6), "reasons": list(r)}
                for i, sc, r in zip(self.items.item_ids, self.items.scores, self.items.reasons, strict=True)
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
    forgotten: list[str] = field(default_factory=list)
    """Users deleted by ``forget_user`` requests in the batch, in stream order."""
    item_updates: list[ItemUpdate] = field(default_factory=list)
    """What the batch taught the item statistics (recorded when ``share_item_stats``), for the peers."""

    def merge(self, other: BatchResult) -> None:
        """Add the result of the next part of the same batch: its lists, forgotten users and item updates follow
        these, its counts and loss add up.

        >>> a = BatchResult(applied=2, loss=0.5, forgotten=["u"], item_updates=[ItemUpdate("x", (), 1.0, 1.0)])
        >>> a.merge(BatchResult([], 1, 1, 0.25, ["v"], [ItemUpdate("y", ("x",), 3.0, 2.0)]))
        >>> a.applied, a.duplicates, a.loss, a.forgotten, [u.item_id for u in a.item_updates]
        (3, 1, 0.75, ['u', 'v'], ['x', 'y'])
        """
        self.recommendations += other.recommendations
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.loss += other.loss
        self.forgotten += other.forgotten
        self.item_updates += other.item_updates


@dataclass(slots=True)
class _Example:
    """A labelled event's training example, as captured when the event came (featurised with the batch's)."""

    profile: UserProfile
    seeds: list[int]
    taste: np.ndarray
    categories: dict[str, float]
    rows: np.ndarray
    """The taken item first, then the negatives."""
    ts: float
    popularity: np.ndarray
    codes: np.ndarray
    weight: float


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
        self.catalog = Catalog(settings.retrieval)
        self.covis = CoVisitation(settings.retrieval)
        self.coemb = CoEmbedding(settings.retrieval)
        self.sessions = SessionIndex(settings.retrieval)
        """Users' recent sessions (personal: erased by :meth:`forget`), for session-neighbour candidates."""
        self.ranker = FusionRanker(settings.ranker)
        self.encode_queries = encode_queries
        self.rng = np.random.default_rng(settings.retrieval.seed)
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        """Embeddings of recent distinct queries: search traffic repeats its head queries all the time."""
        self.offers = OfferCache(
            settings.ranker.candidate_cache_users,
            CANDIDATE_SOURCES * settings.retrieval.candidates_per_source,
            settings.retrieval.top_k,
        )
        """Each recent user's last offer: learning happens against what retrieval and the list offered."""
        self.online = OnlineScores(settings.retrieval.top_k, LIST_KINDS, settings.ranker.online_window)
        """Each item event scored against its user's last published list before it is learned (online quality)."""
        self.clock = 0.0
        """Latest event time seen: 'now' for popularity and freshness, so replays are reproducible."""
        self.rules = RuleSet()
        """The business rules in force (:meth:`set_rules`)."""
        self.published = PublishedLists(settings.retrieval.top_k)
        """Each user's last published list: whose list holds a withdrawn item (:meth:`users_listing`)."""
        self.explore_rng = np.random.default_rng([settings.retrieval.seed, EXPLORATION_STREAM])
        self._compiled: tuple[int, int, RuleSet, np.ndarray | None, np.ndarray | None] | None = None

    # --- catalogue ----------------------------------------------------------------------------------
    def upsert_item(self, emb: ItemEmbedding) -> bool:
        return self.catalog.upsert(emb)

    def withdraw(self, item_id: str, ts: float | None = None) -> bool:
        """Withdraw an item from every candidate source until a later upsert relists it (:meth:`Catalog.withdraw`);
        False when nothing changed (already withdrawn, or the withdrawal is older than the version held)."""
        return self.catalog.withdraw(item_id, ts)

    def users_listing(self, item_ids: Sequence[str]) -> list[str]:
        """Users whose last published list holds any of ``item_ids``."""
        rows = [self.catalog.row_of[i] for i in item_ids if i in self.catalog.row_of]
        return self.published.users_listing(rows) if rows else []

    def set_rules(self, rules: RuleSet) -> None:
        """Apply these business rules to every list from now on."""
        self.rules = rules

    def _rule_arrays(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(rows no list may hold, score multiplier per row), each None when nothing applies; compiled from the
        catalogue and the rules, again only when either changed."""
        cat, rules = self.catalog, self.rules
        if not cat.n_withdrawn and not rules.excludes and not rules.boosts:
            return None, None
        held = self._compiled
        if held is not None and held[0] == cat.version and held[1] == len(cat) and held[2] is rules:
            return held[3], held[4]
        size = len(cat)
        blocked: np.ndarray | None = None
        if cat.n_withdrawn or rules.excludes:
            blocked = ~cat.available[:size]
            if rules.excludes:
                n_cats, n_brands = len(cat.category_names), len(cat.brand_code)
                blocked |= code_mask(rules.exclude_categories, cat.category_code, n_cats)[cat.category[:size]]
                blocked |= code_mask(rules.exclude_brands, cat.brand_code, n_brands)[cat.brand[:size]]
                blocked[[cat.row_of[i] for i in rules.exclude_items if i in cat.row_of]] = True
        multiplier: np.ndarray | None = None
        if rules.boosts:
            by_category = code_multipliers(rules.boost_categories, cat.category_code, len(cat.category_names))
            by_brand = code_multipliers(rules.boost_brands, cat.brand_code, len(cat.brand_code))
            multiplier = by_category[cat.category[:size]] * by_brand[cat.brand[:size]]
        self._compiled = (cat.version, size, rules, blocked, multiplier)
        return blocked, multiplier

    # --- features -----------------------------------------------------------------------------------
    def user_context(self, profile: UserProfile, now: float, query_vector: np.ndarray | None = None) -> UserContext:
        """What features need about a user besides the candidates, computed once per ranking."""
        return self.user_contexts([profile], now, [query_vector])[0]

    def user_contexts(
        self, profiles: Sequence[UserProfile], now: float, query_vectors: Sequence[np.ndarray | None]
    ) -> list[UserContext]:
        """:meth:`user_context` for many users: their co-visitation scores in one pass, their tastes normalised
        in one pass."""
        seeds = [self._rows(p.recent) for p in profiles]
        covis = self.covis.score_arrays_many(seeds, now)
        sessions = self.sessions.scores_many([p.user_id for p in profiles])
        both = tastes(profiles, self.settings.retrieval.embedding_dim)
        user_vector = self.coemb.user_vector
        return [
            UserContext(p, s, c, t, p.categories, qv, user_vector(s), ss)
            for p, s, c, t, qv, ss in zip(profiles, seeds, covis, both, query_vectors, sessions, strict=True)
        ]

    def features(
        self, profile: UserProfile, rows: np.ndarray, now: float, query_vector: np.ndarray | None = None
    ) -> np.ndarray:
        """Feature matrix (len(rows), F) of ``rows`` for ``profile`` as it is now."""
        return self.features_many([self.user_context(profile, now, query_vector)], [rows], float(now))

    def features_many(
        self,
        users: Sequence[UserContext],
        rows: Sequence[np.ndarray],
        now: float | np.ndarray,
        items: ItemState | None = None,
    ) -> np.ndarray:
        """Feature matrices of several users' candidates, stacked: (sum of len(rows), F) (see :mod:`.features`).

        Training examples pass ``now`` per row and the item-side state captured with them (``items``).
        """
        half_life = self.settings.retrieval.freshness_half_life_s
        return feature_matrix(self.catalog, self.coemb, users, rows, now, half_life, items)

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
            while len(cache) > self.settings.retrieval.query_cache_size:
                cache.popitem(last=False)
        return out

    # --- item statistics ----------------------------------------------------------------------------
    def fold_item_event(self, previous: list[int], row: int, weight: float, ts: float, visits: list[Any]) -> None:
        """Item-level statistics learn from one item event: popularity now, co-visitation and co-embeddings
        once the batch's events are all in (``visits``, see :meth:`fold_visits`)."""
        self.catalog.add_popularity(row, weight, ts)
        visits.append((previous, row, weight, ts))

    def fold_visits(self, visits: Sequence[tuple[list[int], int, float, float]]) -> None:
        """The batch's item-to-item statistics: co-visitation counts in stream order, one co-embedding step."""
        self.covis.add_many(visits)
        self.coemb.add_many([(previous, row) for previous, row, _, _ in visits])

    def apply_item_updates(self, updates: Sequence[ItemUpdate]) -> int:
        """Fold peers' item updates in, as :meth:`learn` folds this worker's own events; items not in the
        catalogue yet are registered by id. Returns how many were applied."""
        ensure = self.catalog.ensure
        visits: list[Any] = []
        for update in updates:
            previous = [ensure(i) for i in update.previous]
            self.fold_item_event(previous, ensure(update.item_id), update.weight, update.ts, visits)
            self.clock = max(self.clock, update.ts)
        self.fold_visits(visits)
        return len(updates)

    # --- learning -----------------------------------------------------------------------------------
    def _negatives(self, pool: np.ndarray, shown: np.ndarray, positive: int) -> list[int]:
        """Shown-not-taken + candidate-pool + uniform negatives for one labelled event (no duplicates)."""
        s = self.settings.ranker
        chosen = [r for r in shown.tolist() if r != positive][: s.negatives_shown]
        if len(pool):
            draws = self.rng.choice(pool, min(len(pool), s.negatives_pool + len(chosen) + 1), replace=False)
            chosen += [int(r) for r in draws if r != positive and r not in chosen][: s.negatives_pool]
        n_items = len(self.catalog)
        if n_items > 1 and s.negatives_sampled > 0:
            draws = self.rng.integers(0, n_items, size=s.negatives_sampled)
            chosen += [int(r) for r in dict.fromkeys(draws.tolist()) if r != positive and r not in chosen]
        return chosen

    def last_offered(self, user_id: str) -> list[str]:
        """Items of the last list published to ``user_id`` that they have not taken since (empty if none is kept)."""
        return [self.catalog.item_id(r) for r in self.offers.shown(user_id).tolist()]

    def _example(self, profile: UserProfile, rows: np.ndarray, event: Event) -> _Example:
        """A training example (taken item first, then negatives) against the state *before* ``event``.

        Its features are computed with the whole batch's (:meth:`_step`, one vectorised pass): what later events
        of the batch change in place — the user's profile, popularity, categories — is captured now; the
        item-to-item statistics are folded in only after the step, so they are as of the batch start.
        """
        cat = self.catalog
        return _Example(
            profile,
            self._rows(profile.recent),
            taste(profile),
            dict(profile.categories),
            rows,
            event.ts,
            cat.relative_popularity(rows, event.ts),
            cat.category[rows],
            self.settings.profile.event_weight(event.type),
        )

    def _step(self, examples: Sequence[_Example]) -> float:
        """Features of every example of the batch in one pass, then one ranker step; returns the loss."""
        lens = np.array([len(e.rows) for e in examples], np.int64)
        seeds = [e.seeds for e in examples]
        covis = self.covis.score_arrays_many(seeds, [e.ts for e in examples])
        sessions = self.sessions.scores_many([e.profile.user_id for e in examples])
        users = [
            UserContext(e.profile, s, c, e.taste, e.categories, None, self.coemb.user_vector(s), ss)
            for e, s, c, ss in zip(examples, seeds, covis, sessions, strict=True)
        ]
        items = ItemState(np.concatenate([e.popularity for e in examples]), np.concatenate([e.codes for e in examples]))
        x = self.features_many(users, [e.rows for e in examples], np.repeat([e.ts for e in examples], lens), items)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        n_neg = lens - 1
        neg = np.zeros((len(examples), int(n_neg.max()), len(FEATURES)), np.float32)
        for i, (start, n) in enumerate(zip(starts.tolist(), n_neg.tolist(), strict=True)):
            neg[i, :n] = x[start + 1 : start + 1 + n]
        return self.ranker.step(x[starts], neg, n_neg, np.array([e.weight for e in examples], np.float32))

    def _score(self, users: Sequence[str], rows: Sequence[int], repeats: Sequence[bool]) -> None:
        """Online quality: where each event's item stood in its user's last published list (read-only: the lists
        were published before this batch, and nothing here changes what is learned or ranked)."""
        which, ranks, kinds = self.offers.published_ranks(users, rows)
        self.online.add(kinds, np.asarray(repeats, bool)[which], ranks)

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
        examples: list[_Example] = []
        visits: list[Any] = []
        session_visits: list[tuple[str, str | None, int, float]] = []
        scored: tuple[list[str], list[int], list[bool]] = ([], [], [])
        """(user, item row, repeat) of the batch's item events whose user has a published list kept."""
        retrieval = self.settings.retrieval
        shared_window = max(retrieval.cooc_window, retrieval.coemb_train_window)  # what peers' folds read
        for idx, event in enumerate(events):
            profile = profiles.get(event.user_id) or store.get(event.user_id)
            if profile is None:
                profile = UserProfile.new(event.user_id, self.settings.retrieval.embedding_dim)
            profiles[event.user_id] = profile
            part, off = (positions[idx] or (None, None)) if positions is not None else (None, None)
            if profile.already_applied(part, off):
                result.duplicates += 1
                continue
            self.clock = max(self.clock, event.ts)
            if event.type == HIDE:  # "not interested": remembered in the profile; the user's next list honours it
                apply_hide(profile, event, self.settings.profile, part, off)
                behaviour[event.user_id] = _Request(profile, event.ts)
            elif event.type in ITEM_EVENT_TYPES and event.item_id is not None:
                row = self.catalog.ensure(event.item_id)
                if event.context and isinstance(event.context.get("category"), str):
                    self.catalog.set_category(row, event.context["category"])
                if event.user_id in self.offers:  # test (scored below, in one pass) ... then train
                    scored[0].append(event.user_id)
                    scored[1].append(row)
                    scored[2].append(is_repeat(event.item_id, profile.recent, profile.purchased))
                pool = self.offers.pool(event.user_id)
                # Learn only from choices the ranker could have made: the taken item was among the candidates
                # it ranked. Items retrieval never offered would teach it to distrust its own sources.
                negs: list[int] = []
                if self.settings.ranker.learn and pool is not None and row in pool:
                    negs = self._negatives(pool, self.offers.shown(event.user_id), row)
                if negs:
                    examples.append(self._example(profile, np.array([row, *negs], np.int64), event))
                previous = self._rows(profile.recent)
                weight = self.settings.profile.event_weight(event.type)
                if self.settings.batching.share_item_stats:
                    recent = tuple(profile.recent[-shared_window:])
                    result.item_updates.append(ItemUpdate(event.item_id, recent, weight, event.ts))
                vector = self.catalog.vectors[row] if self.catalog.has_vector[row] else None
                apply_event(profile, event, vector, self.catalog.category_of(row), self.settings.profile, part, off)
                if (self.offers.shown(event.user_id) == row).any():  # taken from the list: an uptake
                    self.catalog.uptakes[row] += 1
                self.offers.taken(event.user_id, row)  # no longer a shown-not-taken negative
                self.fold_item_event(previous, row, weight, event.ts, visits)
                session_visits.append((event.user_id, event.session_id, row, event.ts))
                behaviour[event.user_id] = _Request(profile, event.ts)
            else:  # search: update intent with the query, answer with query-aware results
                qv = qvecs.get(event.query or "")
                apply_event(profile, event, qv, None, self.settings.profile, part, off)
                searches.append(_Request(profile, event.ts, event.query, qv))
            result.applied += 1
        if scored[0]:
            self._score(*scored)
        if examples:
            result.loss = self._step(examples)
        self.fold_visits(visits)
        self.sessions.add_many(session_visits)
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
    ) -> list[RankedList]:
        """Top-k for each profile (one FAISS call for all); query vectors make it a search.

        ``remember`` keeps each list and the pool it was ranked from as the user's offer (:class:`OfferCache`):
        what the ranker learns against, and online quality is scored against, when the user's next item event
        arrives (a list ranked for a query vector is of kind search, any other of kind behaviour).
        """
        k = k or self.settings.retrieval.top_k
        now = self.clock if now is None else now
        n_cand = self.settings.retrieval.candidates_per_source
        qvs = list(query_vectors) if query_vectors is not None else [None] * len(profiles)
        users = self.user_contexts(profiles, now, qvs)
        cfg = self.settings.retrieval
        queries = retrieval_queries([user.taste for user in users], qvs, cfg.search_query_weight, cfg.embedding_dim)
        _, sem_rows = self.catalog.search(queries, n_cand)
        blocked, multiplier = self._rule_arrays()
        popular = self.catalog.top_popular(n_cand)
        if blocked is not None:
            popular = popular[~blocked[popular]]
        excluded: list[list[int]] = []
        for profile, user, qv in zip(profiles, users, qvs, strict=True):
            rows = self._rows(profile.purchased) if self.settings.retrieval.exclude_purchased else []
            if self.settings.retrieval.exclude_seen and qv is None:
                rows += user.seeds
            if profile.hidden_items:
                rows += self._rows(profile.hidden_items)
            excluded.append(rows)
        personal = [np.concatenate([user.covis.top(n_cand, blocked), _top(user.session, n_cand)]) for user in users]
        pools = self._without_hidden_categories(
            profiles, candidate_pools(sem_rows, personal, popular, excluded, blocked)
        )
        x = self.features_many(users, pools, now)
        scores = self.ranker.score(x)
        all_rows = np.concatenate(pools) if pools else np.zeros(0, np.int64)
        if multiplier is not None:
            scores = boosted(scores, multiplier[all_rows])
        lists = self.settings.lists
        constraints = Constraints(
            lists.near_duplicate_cosine if lists.near_duplicates else None,
            self.rules.max_per_category,
            self.rules.max_per_brand,
            lists.mmr_lambda,
        )
        explore = [remember and qv is None for qv in qvs]
        chosen = select_lists(self.catalog, pools, scores, k, lists, constraints, explore, self.explore_rng)
        if remember:
            for user, cands, top, qv in zip(users, pools, chosen.picked, qvs, strict=True):
                listed = all_rows[top]
                if len(cands):
                    kind = BEHAVIOUR_CODE if qv is None else SEARCH_CODE
                    self.offers.remember(user.profile.user_id, cands, listed, kind)
                self.published.remember(user.profile.user_id, listed)
        picked = np.concatenate(chosen.picked) if chosen.picked else np.zeros(0, np.int64)
        why = self.ranker.reasons_many(x[picked]) if reasons else [()] * len(picked)
        ids = self.catalog.ids
        picked_rows = all_rows[picked]
        if remember:
            self.catalog.record_exposure(picked_rows)
        listed_rows = picked_rows.tolist()
        all_scores = scores[picked].tolist()
        out: list[RankedList] = []
        start = 0
        for top, at, n_explored in zip(chosen.picked, chosen.explore_at, chosen.explored, strict=True):
            end = start + len(top)
            if n_explored and reasons:
                why[start + at : start + at + n_explored] = [(EXPLORING,)] * n_explored
            out.append(RankedList([ids[r] for r in listed_rows[start:end]], all_scores[start:end], why[start:end]))
            start = end
        return out

    def _without_hidden_categories(self, profiles: Sequence[UserProfile], pools: list[np.ndarray]) -> list[np.ndarray]:
        """Pools less the items of each user's hidden categories (only users who hid one pay for the check)."""
        codes = self.catalog.category_code
        for u, profile in enumerate(profiles):
            if profile.hidden_categories:
                hidden = [codes[c] for c in profile.hidden_categories if c in codes]
                if hidden:
                    pools[u] = pools[u][~np.isin(self.catalog.category[pools[u]], hidden)]
        return pools

    def refresh(self, user_ids: Sequence[str], store: ProfileStore) -> list[Recommendation]:
        """Fresh lists for these users, from their profiles as they are (nothing is learned): how a worker replaces
        lists that hold a withdrawn item. Users without a profile in ``store`` are skipped."""
        profiles = [p for p in map(store.get, user_ids) if p is not None]
        if not profiles:
            return []
        lists = self.recommend(profiles, self.clock, remember=True)
        now = time.time()
        version = self.ranker.version
        return [
            Recommendation(p.user_id, items, version, now, p.last_ts) for p, items in zip(profiles, lists, strict=True)
        ]

    def explain(self, profile: UserProfile, categories: int = EXPLAIN_CATEGORIES) -> dict[str, Any]:
        """Why ``profile``'s user gets their list: the behaviour list ranked now from the profile (it can differ
        from the last one published, ranked when their last event came, and has no exploration slot, a random draw
        that is not replayed), each item's score split into the ranker's terms θ_f·x_f by feature (they add up to
        the score), their top categories and recent items.

        Read-only, like any ranking that is not remembered: nothing is learned, remembered or published.
        """
        [ranked] = self.recommend([profile], self.clock, remember=False)
        row_of = self.catalog.row_of
        rows = np.array([row_of[i] for i in ranked.item_ids], np.int64)
        x = self.features(profile, rows, self.clock) if len(rows) else np.zeros((0, len(FEATURES)), np.float32)
        terms = (x * self.ranker.weights).tolist()
        top = sorted(profile.categories.items(), key=lambda kv: -kv[1])[:categories]
        return {
            "user_id": profile.user_id,
            "model_version": self.ranker.version,
            "top_categories": [{"category": name, "weight": weight} for name, weight in top],
            "recent_items": [
                {"item_id": item_id, "purchased": item_id in profile.purchased} for item_id in reversed(profile.recent)
            ],
            "items": [
                {
                    "item_id": item.item_id,
                    "score": item.score,
                    "reasons": list(item.reasons),
                    "contributions": dict(zip(FEATURES, row, strict=True)),
                }
                for item, row in zip(ranked, terms, strict=True)
            ],
        }

    def _process_run(
        self,
        events: Sequence[Event],
        store: ProfileStore,
        positions: Sequence[tuple[int, int] | None] | None = None,
    ) -> BatchResult:
        """Learn from a run of interactions, then publish-ready top-k for every user it touched (and every search)."""
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
                Recommendation(req.profile.user_id, items, version, now, req.ts, kind, req.query)
            )
        return result

    def forget(self, user_id: str, store: ProfileStore) -> None:
        """Delete everything kept about a user (privacy requests): the profile, the in-memory last offer and their
        sessions (the session-neighbour index).

        Aggregates the user's events contributed to (co-visitation, popularity, co-embeddings, the ranker's
        weights) are not per-user and stay; a later event for the user starts a fresh profile.
        """
        store.delete(user_id)
        self.offers.forget(user_id)
        self.sessions.forget(user_id)
        self.published.forget(user_id)

    def process(
        self,
        events: Sequence[Event],
        store: ProfileStore,
        positions: Sequence[tuple[int, int] | None] | None = None,
    ) -> BatchResult:
        """Learn from a batch, then publish-ready top-k for every user it touched (and every search).

        ``forget_user`` requests are honoured in stream order: the batch is cut at each one, the events before
        it are processed, then the user is forgotten and any list computed for them earlier in the batch is
        dropped, so nothing about them is published after the request; their events after it (same batch or
        later) start a fresh profile. ``BatchResult.forgotten`` lists who was forgotten.
        """
        forgets = [i for i, e in enumerate(events) if e.is_forget]
        if not forgets:
            return self._process_run(events, store, positions)
        total = BatchResult()
        start = 0
        for idx in [*forgets, len(events)]:
            if idx > start:
                total.merge(
                    self._process_run(events[start:idx], store, positions[start:idx] if positions is not None else None)
                )
            if idx < len(events):
                user_id = events[idx].user_id
                self.forget(user_id, store)
                total.recommendations = [r for r in total.recommendations if r.user_id != user_id]
                total.forgotten.append(user_id)
            start = idx + 1
        return total


def _top(found: CovisScores | None, n: int) -> np.ndarray:
    return found.top(n) if found is not None else np.zeros(0, np.int64)
