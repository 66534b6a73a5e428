"""Baselines a team would otherwise ship, evaluated in the same prequential harness as streamrec.

Each is small and honest. Decay (``popularity_half_life_s``) and neighbour bounds come from the same
:class:`Settings` streamrec runs with, so an override on the command line (``--set k=v``) applies to every system
alike and a baseline is never handicapped by a setting only streamrec got; the co-visitation baseline has its
own tuned window (``baseline_cooc_window``), since a wider one serves it better than it serves streamrec.
All follow the same list rules as streamrec: purchased items and the user's recent items are not recommended,
and a list that its own signal cannot fill is topped up with decayed popularity (so cold users get something
from every system).

* :class:`PopularityBaseline` — time-decayed global popularity.
* :class:`CooccurrenceBaseline` — item-to-item co-visitation from the user's recent items, decayed.
* :class:`OnlineMFBaseline` — river's ``reco.BiasedMF`` trained online on implicit feedback, ranking the
  most popular candidates.
* :class:`TextOnlyBaseline` — cosine between the user's behaviour embedding and item text embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamrec.model.catalog import Catalog
from streamrec.model.covisitation import CoVisitation
from streamrec.model.events import Event, ItemEmbedding
from streamrec.model.numeric import DecayClock, unit
from streamrec.model.profiles import UserProfile, apply_event
from streamrec.settings import Settings

MF_FACTORS = 16
MF_LEARNING_RATE = 0.05
MF_L2 = 0.01
MF_CANDIDATES = 300
MF_NEGATIVES = 2


@dataclass
class _History:
    """A user's last ``window`` distinct items and every purchase: what no baseline's list offers them again.

    ``window`` is the worker profile's ``recent_items``, so every system, streamrec's own lists included, leaves
    out the same seen items (the same list rules for all).
    """

    window: int
    recent: list[str] = field(default_factory=list)
    purchased: set[str] = field(default_factory=set)

    def add(self, event: Event) -> None:
        if event.item_id is None:
            return
        if event.item_id in self.recent:
            self.recent.remove(event.item_id)
        self.recent.append(event.item_id)
        del self.recent[: -self.window]
        if event.type == "purchase":
            self.purchased.add(event.item_id)

    def excluded(self) -> set[str]:
        return self.purchased | set(self.recent)


class PopularityBaseline:
    """Most popular items right now (event-weighted counts decaying with ``popularity_half_life_s``)."""

    name = "popularity"

    def __init__(self, settings: Settings) -> None:
        self.weights = {t: settings.profile.event_weight(t) for t in ("view", "click", "add_to_cart", "purchase")}
        self.clock = DecayClock(settings.retrieval.popularity_half_life_s)
        self.row_of: dict[str, int] = {}
        self.ids: list[str] = []
        self.counts = np.zeros(1024)
        self.histories: dict[str, _History] = {}
        self.recent_items = settings.profile.recent_items

    def upsert_item(self, emb: ItemEmbedding) -> None:
        self._row(emb.item.item_id)

    def _row(self, item_id: str) -> int:
        row = self.row_of.get(item_id)
        if row is None:
            row = self.row_of[item_id] = len(self.ids)
            self.ids.append(item_id)
            if row >= len(self.counts):
                self.counts = np.concatenate([self.counts, np.zeros(len(self.counts))])
        return row

    def history(self, user_id: str) -> _History:
        history = self.histories.get(user_id)
        if history is None:
            history = self.histories[user_id] = _History(self.recent_items)
        return history

    def learn(self, event: Event) -> None:
        self.history(event.user_id).add(event)
        if event.item_id is None or event.type not in self.weights:
            return
        if self.clock.needs_rescale(event.ts):
            self.counts *= self.clock.rebase(event.ts)
        row = self._row(event.item_id)  # before indexing: a new row may grow (replace) ``counts``
        self.counts[row] += self.weights[event.type] * self.clock.growth(event.ts)

    def top(self, k: int, exclude: set[str]) -> list[str]:
        """The k most popular item ids not in ``exclude``."""
        n = len(self.ids)
        if n == 0:
            return []
        want = min(n, k + len(exclude))
        counts = self.counts[:n]
        rows = np.argpartition(-counts, want - 1)[:want]
        rows = rows[np.argsort(-counts[rows], kind="stable")]
        out = [self.ids[r] for r in rows if counts[r] > 0 and self.ids[r] not in exclude]
        return out[:k]

    def recommend(self, user_id: str, now: float, k: int) -> list[str]:
        hist = self.histories.get(user_id)
        return self.top(k, hist.excluded() if hist else set())


def _fill(ranked: Sequence[str], fallback: PopularityBaseline, k: int, exclude: set[str]) -> list[str]:
    """``ranked`` topped up with popular items (no duplicates, nothing excluded) to length k."""
    out = [i for i in ranked if i not in exclude][:k]
    if len(out) < k:
        seen = exclude | set(out)
        out += fallback.top(k - len(out), seen)
    return out


class CooccurrenceBaseline:
    """Items co-visited with the user's last ``baseline_cooc_window`` items (closer weighs more), decayed."""

    name = "cooccurrence"

    def __init__(self, settings: Settings) -> None:
        self.popularity = PopularityBaseline(settings)
        own_window = dataclasses.replace(settings.retrieval, cooc_window=settings.lab.baseline_cooc_window)
        self.covis = CoVisitation(own_window)
        self.row_of: dict[str, int] = {}
        self.ids: list[str] = []

    def upsert_item(self, emb: ItemEmbedding) -> None:
        self.popularity.upsert_item(emb)

    def _row(self, item_id: str) -> int:
        row = self.row_of.get(item_id)
        if row is None:
            row = self.row_of[item_id] = len(self.ids)
            self.ids.append(item_id)
        return row

    def learn(self, event: Event) -> None:
        hist = self.popularity.history(event.user_id)
        if event.item_id is not None:
            previous = [self._row(i) for i in hist.recent]
            self.covis.add(previous, self._row(event.item_id), self.popularity.weights.get(event.type, 0.0), event.ts)
        self.popularity.learn(event)

    def recommend(self, user_id: str, now: float, k: int) -> list[str]:
        hist = self.popularity.histories.get(user_id)
        if hist is None:
            return self.popularity.top(k, set())
        exclude = hist.excluded()
        scores = self.covis.scores([self.row_of[i] for i in hist.recent], now)
        ranked = sorted(scores, key=scores.__getitem__, reverse=True)
        return _fill([self.ids[r] for r in ranked[: k + len(exclude)]], self.popularity, k, exclude)


class OnlineMFBaseline:
    """river ``BiasedMF`` (16 factors) on implicit feedback: taken items → 1, uniformly sampled items → 0.

    Uniform negatives let the item biases learn popularity (negatives drawn from the popular items instead
    teach it to push popular items down, and it does worse; docs/evaluation.md, "Systems compared").

    Scoring every catalogue item per request is too slow in pure Python, so it ranks the 300 currently most
    popular items (which hold most of the positives) — the usual way MF is served behind a candidate source.
    """

    name = "online_mf"

    def __init__(self, settings: Settings) -> None:
        from river import optim, reco

        self.popularity = PopularityBaseline(settings)
        self.model = reco.BiasedMF(
            n_factors=MF_FACTORS,
            bias_optimizer=optim.SGD(MF_LEARNING_RATE),
            latent_optimizer=optim.SGD(MF_LEARNING_RATE),
            l2_bias=MF_L2,
            l2_latent=MF_L2,
            seed=settings.retrieval.seed,
        )
        self.rng = np.random.default_rng(settings.retrieval.seed)

    def upsert_item(self, emb: ItemEmbedding) -> None:
        self.popularity.upsert_item(emb)

    def learn(self, event: Event) -> None:
        if event.item_id is not None and event.type in self.popularity.weights:
            self.model.learn_one(event.user_id, event.item_id, 1.0)
            ids = self.popularity.ids
            for j in self.rng.integers(0, len(ids), size=MF_NEGATIVES):
                if ids[int(j)] != event.item_id:
                    self.model.learn_one(event.user_id, ids[int(j)], 0.0)
        self.popularity.learn(event)

    def recommend(self, user_id: str, now: float, k: int) -> list[str]:
        hist = self.popularity.histories.get(user_id)
        exclude = hist.excluded() if hist else set()
        candidates = self.popularity.top(MF_CANDIDATES, exclude)
        if hist is None:
            return candidates[:k]
        scored = sorted(candidates, key=lambda i: self.model.predict_one(user_id, i), reverse=True)
        return scored[:k]


class TextOnlyBaseline:
    """Nearest items (FAISS, cosine) to the user's behaviour embedding — the same profile code, no ranker."""

    name = "text_only"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.popularity = PopularityBaseline(settings)
        self.catalog = Catalog(settings.retrieval)
        self.profiles: dict[str, UserProfile] = {}

    def upsert_item(self, emb: ItemEmbedding) -> None:
        self.catalog.upsert(emb)
        self.popularity.upsert_item(emb)

    def learn(self, event: Event) -> None:
        profile = self.profiles.get(event.user_id) or UserProfile.new(
            event.user_id, self.settings.retrieval.embedding_dim
        )
        self.profiles[event.user_id] = profile
        row = self.catalog.row_of.get(event.item_id or "")
        vector = self.catalog.vectors[row] if row is not None and self.catalog.has_vector[row] else None
        apply_event(profile, event, vector, None, self.settings.profile)
        self.popularity.learn(event)

    def recommend(self, user_id: str, now: float, k: int) -> list[str]:
        hist = self.popularity.histories.get(user_id)
        profile = self.profiles.get(user_id)
        exclude = hist.excluded() if hist else set()
        if profile is None or not profile.long_term.any():
            return self.popularity.top(k, exclude)
        query = unit(profile.long_term)[None, :]
        _, rows = self.catalog.search(query, k + len(exclude))
        ranked = [self.catalog.item_id(int(r)) for r in rows[0] if r >= 0]
        return _fill(ranked, self.popularity, k, exclude)
