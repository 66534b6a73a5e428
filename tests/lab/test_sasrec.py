"""SASRec on a schedule: it never trains on an event at or after the one it scores, and serves its last model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from streamrec.io.logs import Record
from streamrec.lab.evaluation import _Job, _replay
from streamrec.lab.sasrec import SASRec, SasrecParams, SasrecSystem, training_windows
from streamrec.model.events import Event, Item, ItemEmbedding
from streamrec.settings import Settings

TINY = SasrecParams(dim=8, max_len=4, blocks=1, epochs=3, batch=4, retrain_every=1)


def log() -> list[Record]:
    """Six users go a → b; then "z" goes a → x, the first x ever; then four more users go a → x (22 events)."""
    pairs = [(f"u{n}", item) for n in range(6) for item in "ab"]
    pairs += [("z", "a"), ("z", "x")] + [(f"w{n}", item) for n in range(4) for item in "ax"]
    items = [Record("items", i, Item(i, "", 0.0, category="c").to_dict(), 0.0) for i in "abx"]
    events = [
        Record("events", user, Event(user, "view", float(t), item_id=item).to_dict(), float(t))
        for t, (user, item) in enumerate(pairs, start=1)
    ]
    return items + events


def job(records: list[Record]) -> _Job:
    embs = {
        i: ItemEmbedding(Item(r.key, "", 0.0, category="c"), np.ones(8, np.float32) / np.sqrt(8), "m", "category")
        for i, r in enumerate(records)
        if r.topic == "items"
    }
    return _Job(records, embs, Settings.of(embedding_dim=8), 20, False)


class Watched(SasrecSystem):
    """Records, at every request, how many events it had learned and what its served model was trained on."""

    def __init__(self, params: SasrecParams) -> None:
        super().__init__(Settings(), params)
        self.requests: list[tuple[int, int, bool]] = []

    def recommend(self, user_id: str, now: float, k: int) -> list[str]:
        trained_on = self.retrains[-1].events if self.retrains else 0
        knows_x = self.served is not None and "x" in self.served.index_of
        self.requests.append((len(self.events), trained_on, knows_x))
        return super().recommend(user_id, now, k)


@pytest.mark.parametrize("full_softmax_items", [5_000, 1], ids=["full-softmax", "sampled-softmax"])
def test_a_retrain_uses_exactly_the_events_before_the_scored_one(full_softmax_items: int) -> None:
    system = Watched(dataclasses.replace(TINY, full_softmax_items=full_softmax_items, negatives=8))
    records = log()
    ranks, _, _, _ = _replay(system, job(records))
    n = len(records) - 3
    # retrained after every event, on all of them so far: 1, 2, ..., n events
    assert [r.events for r in system.retrains] == list(range(1, n + 1))
    # each request is served by the model trained on exactly the events before it, never one more
    assert [(learned, trained) for learned, trained, _ in system.requests] == [(i, i) for i in range(n)]
    # "x" is unique to the future until z takes it (the 14th event): no model before can know or rank it
    first_x = 13
    assert not any(knows for _, _, knows in system.requests[: first_x + 1])
    assert all(knows for _, _, knows in system.requests[first_x + 1 :])
    assert ranks[first_x] is None


def test_between_retrains_the_last_model_serves_and_new_items_wait_for_the_next_retrain() -> None:
    system = Watched(SasrecParams(dim=8, max_len=4, blocks=1, epochs=3, batch=4, retrain_every=5))
    _replay(system, job(log()))
    assert [r.events for r in system.retrains] == [5, 10, 15, 20]
    assert [trained for _, trained, _ in system.requests] == [0] * 5 + [5] * 5 + [10] * 5 + [15] * 5 + [20] * 2
    # x first came at the 14th event: the retrain after 15 events is the first to know it
    assert [knows for _, _, knows in system.requests] == [False] * 15 + [True] * 7


def test_popularity_serves_before_the_first_retrain_and_users_with_no_known_item() -> None:
    system = SasrecSystem(Settings(), SasrecParams(dim=8, max_len=4, blocks=1, epochs=1, batch=4, retrain_every=4))
    for t, item in enumerate("abab"):
        system.learn(Event(f"u{t}", "view", float(t), item_id=item))
    assert len(system.retrains) == 1
    system.learn(Event("new", "view", 5.0, item_id="c"))  # c came after the retrain: the model does not know it
    assert system.scores("new") is None
    assert system.recommend("new", 5.0, 2) == system.popularity.top(2, {"c"})
    assert system.scores("u0") is not None


def test_training_is_deterministic_and_right_aligned_padding_changes_nothing() -> None:
    def trained() -> SasrecSystem:
        system = SasrecSystem(Settings(), TINY)
        for t, (user, item) in enumerate([(u, i) for u in "pqr" for i in "abcab"]):
            system.learn(Event(user, "view", float(t), item_id=item))
        return system

    one, two = trained(), trained()
    np.testing.assert_array_equal(one.scores("p"), two.scores("p"))
    model = SASRec(3, TINY).eval()
    with torch.no_grad():
        bare = model(torch.tensor([[1, 2]]))[0, -1]
        padded = model(torch.tensor([[0, 0, 1, 2]]))[0, -1]
    torch.testing.assert_close(bare, padded)


def test_training_windows_cut_each_sequence_from_its_end() -> None:
    assert training_windows([[1, 2, 3, 4, 5, 6], [7], [8, 9]], 3).tolist() == [
        [3, 4, 5, 6],
        [0, 1, 2, 3],
        [0, 0, 8, 9],
    ]
