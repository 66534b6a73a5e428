from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.catalog import Catalog
from streamrec.model.events import Item, ItemEmbedding
from streamrec.settings import Settings, SettingsError

S = Settings.of(embedding_dim=4, model_half_life_s=10.0, cooc_window=2)


def emb(item_id: str, vec: list[float], ts: float = 1.0, category: str | None = "c") -> ItemEmbedding:
    return ItemEmbedding(
        Item(item_id, item_id, ts, category=category, price=5.0), np.array(vec, np.float32), "m", "text"
    )


def test_upsert_replaces_vector_and_ignores_stale_versions() -> None:
    cat = Catalog(S.retrieval)
    assert cat.upsert(emb("a", [1, 0, 0, 0], ts=5.0))
    assert cat.upsert(emb("b", [0, 1, 0, 0]))
    _, rows = cat.search(np.array([[0, 1, 0, 0]], np.float32), 1)
    assert cat.item_id(int(rows[0, 0])) == "b"
    assert cat.upsert(emb("a", [0, 0.6, 0.8, 0], ts=6.0))  # newer: replaces in FAISS
    assert not cat.upsert(emb("a", [1, 0, 0, 0], ts=4.0))  # older: ignored
    assert cat.n_indexed == 2 and len(cat) == 2
    scores, rows = cat.search(np.array([[0, 0, 1, 0]], np.float32), 2)
    assert [cat.item_id(int(r)) for r in rows[0]] == ["a", "b"]
    assert scores[0, 0] == pytest.approx(0.8)


def test_capacity_grows_and_id_only_items_are_not_indexed() -> None:
    cat = Catalog(S.retrieval)
    for i in range(2500):
        cat.upsert(emb(f"i{i}", [1, i % 7, 0, 1]))
    row = cat.ensure("unknown-item")
    assert (len(cat), cat.n_indexed, cat.item_id(row)) == (2501, 2500, "unknown-item")
    assert not cat.has_vector[row] and cat.category_of(row) is None


def test_decayed_popularity_ranks_recent_activity_higher() -> None:
    cat = Catalog(S.retrieval)
    for name in "abc":
        cat.ensure(name)
    cat.add_popularity(cat.row_of["a"], 4.0, ts=0.0)
    cat.add_popularity(cat.row_of["b"], 3.0, ts=10.0)  # one half-life later
    assert cat.popularity_at(np.array([0, 1, 2]), 10.0) == pytest.approx([2.0, 3.0, 0.0])
    assert [cat.item_id(int(r)) for r in cat.top_popular(5)] == ["b", "a"]


def test_most_popular_set_follows_every_update_like_a_full_sort() -> None:
    """The incrementally kept top set equals sorting the whole catalogue, ties broken by lower row."""
    cat = Catalog(Settings.of(embedding_dim=4, model_half_life_s=1.0, candidates_per_source=8).retrieval)
    rng = np.random.default_rng(7)
    for i in range(60):
        cat.ensure(f"i{i}")
    for step in range(3000):
        # skewed rows, integer weights (many exact ties), time moving on (decay + rescales past 2^60)
        row = int(min(rng.zipf(1.3), 60) - 1)
        cat.add_popularity(row, float(rng.integers(1, 3)), ts=step * 0.11)
        if step % 97 == 0:
            pop = cat.popularity[:60]
            expected = sorted(np.flatnonzero(pop > 0).tolist(), key=lambda r: (-pop[r], r))
            assert cat.top_popular(8).tolist() == expected[:8]
            assert cat.top_popular(20).tolist()[:8] == expected[:8]  # beyond the kept set: a full scan
    assert cat.pop_clock.t0 > 0.0  # the counters were rescaled on the way


def test_ivf_index_is_built_at_the_threshold_and_retrained_as_the_catalogue_doubles() -> None:
    s = Settings.of(embedding_dim=8, ann_threshold=3_000, ann_nprobe=64, seed=3)
    cat = Catalog(s.retrieval)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((6_100, 8)).astype(np.float32)
    lists = []
    for i, v in enumerate(vectors):
        cat.upsert(emb(f"i{i}", list(v)))
        if i + 1 in (2_999, 3_000, 5_999, 6_000, 6_100):
            lists.append(getattr(cat.index, "nlist", 0))
    # exact below the threshold, IVF with 4·√n lists at 3,000 items, retrained with more lists at 6,000
    first, second = int(4 * np.sqrt(3_000)), int(4 * np.sqrt(6_000))
    assert lists == [0, first, first, second, second]
    assert cat.n_indexed == 6_100
    unit_rows = vectors[[10, 4_000, 6_050]] / np.linalg.norm(vectors[[10, 4_000, 6_050]], axis=1, keepdims=True)
    _, rows = cat.search(unit_rows, 1)
    assert [cat.item_id(int(r)) for r in rows[:, 0]] == ["i10", "i4000", "i6050"]


def test_relative_popularity_is_scaled_by_the_most_popular_item_across_rescales() -> None:
    s = Settings.of(embedding_dim=4, model_half_life_s=1.0)
    cat = Catalog(s.retrieval)
    for item_id in "abc":
        cat.upsert(emb(item_id, [1, 0, 0, 0]))
    rows = np.array([0, 1, 2])
    cat.add_popularity(0, 3.0, ts=0.0)
    cat.add_popularity(1, 1.0, ts=0.0)
    assert cat.relative_popularity(rows, 0.0) == pytest.approx([1.0, np.log1p(1.0) / np.log1p(3.0), 0.0])
    cat.add_popularity(2, 100.0, ts=70.0)  # 70 half-lives later: counters are rebased (2^60 guard)
    peak = cat.popularity[:3].max()
    assert cat._peak_popularity == peak and cat.popularity_at(np.array([2]), 70.0) == pytest.approx([100.0])
    assert cat.relative_popularity(rows, 70.0)[2] == pytest.approx(1.0)


# --- withdrawal -------------------------------------------------------------------------------------------------


def test_a_withdrawn_item_leaves_faiss_and_the_popular_set_until_a_later_upsert_relists_it() -> None:
    cat = Catalog(Settings.of(embedding_dim=4, candidates_per_source=2).retrieval)
    for name, vec in (("a", [1, 0, 0, 0]), ("b", [0.9, 0.1, 0, 0]), ("c", [0, 1, 0, 0])):
        cat.upsert(emb(name, vec, ts=5.0))
    for name, weight in (("a", 3.0), ("b", 2.0), ("c", 1.0)):
        cat.add_popularity(cat.row_of[name], weight, ts=5.0)
    assert [cat.item_id(int(r)) for r in cat.top_popular(2)] == ["a", "b"]
    assert not cat.withdraw("a", ts=4.0)  # older than the version held: stale
    assert cat.withdraw("a", ts=6.0) and not cat.withdraw("a", ts=7.0)  # once only
    assert (cat.n_indexed, cat.n_withdrawn, bool(cat.available[cat.row_of["a"]])) == (2, 1, False)
    _, rows = cat.search(np.array([[1, 0, 0, 0]], np.float32), 3)
    assert [cat.item_id(int(r)) for r in rows[0] if r >= 0] == ["b", "c"]
    assert [cat.item_id(int(r)) for r in cat.top_popular(2)] == ["b", "c"]  # the next most popular moves up
    cat.add_popularity(cat.row_of["a"], 5.0, ts=5.0)  # still viewed while sold out: counted, not offered
    assert [cat.item_id(int(r)) for r in cat.top_popular(5)] == ["b", "c"]
    assert not cat.upsert(emb("a", [1, 0, 0, 0], ts=6.5))  # older than the withdrawal: stale
    assert cat.upsert(emb("a", [1, 0, 0, 0], ts=8.0))  # relisted, its popularity kept
    assert (cat.n_indexed, cat.n_withdrawn) == (3, 0)
    assert [cat.item_id(int(r)) for r in cat.top_popular(2)] == ["a", "b"]


def test_a_tombstone_withdraws_any_version_and_items_known_only_from_events() -> None:
    cat = Catalog(S.retrieval)
    cat.upsert(emb("a", [1, 0, 0, 0], ts=50.0))
    assert cat.withdraw("a") and cat.withdraw("only-from-events")
    assert cat.n_indexed == 0 and not cat.available[cat.row_of["only-from-events"]]
    version = cat.version
    assert cat.upsert(emb("a", [1, 0, 0, 0], ts=1.0))  # after a tombstone any upsert relists
    assert cat.version > version and cat.n_withdrawn == 1


def test_withdrawn_items_stay_out_of_a_rebuilt_ivf_index() -> None:
    cat = Catalog(Settings.of(embedding_dim=4, ann_threshold=80, candidates_per_source=5).retrieval)
    rng = np.random.default_rng(3)
    for i in range(79):
        cat.upsert(emb(f"i{i}", rng.normal(size=4).tolist()))
    cat.withdraw("i0")
    cat.upsert(emb("i79", rng.normal(size=4).tolist()))  # the 80th indexed vector: switches to IVF
    assert cat.n_indexed == 79
    _, rows = cat.search(cat.vectors[[cat.row_of["i0"]]], 79)
    assert cat.row_of["i0"] not in rows[0].tolist()


def test_titles_are_grouped_by_their_normalised_form() -> None:
    cat = Catalog(S.retrieval)
    for name, title in (("a", "Beatline Bluetooth Headset"), ("b", "beatline  bluetooth-headset!"), ("c", "Other")):
        cat.upsert(ItemEmbedding(Item(name, title, 1.0, brand="x"), np.ones(4, np.float32), "m", "text"))
    cat.upsert(ItemEmbedding(Item("d", "", 1.0), np.ones(4, np.float32), "m", "text"))
    groups = [int(cat.title_group[cat.row_of[n]]) for n in "abcd"]
    assert groups[0] == groups[1] != groups[2] and groups[3] == -1
    assert cat.brand[cat.row_of["a"]] == cat.brand[cat.row_of["c"]] == 0 and cat.brand[cat.row_of["d"]] == -1


def test_model_half_life_decays_the_models_popularity_apart_from_the_baselines() -> None:
    both = Settings.of(embedding_dim=4, popularity_half_life_s=1.0, model_half_life_s=0.0)
    apart = both.replace(model_half_life_s=2.0)
    assert (both.retrieval.item_half_life_s, apart.retrieval.item_half_life_s) == (1.0, 2.0)
    decayed = []
    for s in (both, apart):
        cat = Catalog(s.retrieval)
        cat.upsert(emb("a", [1, 0, 0, 0]))
        cat.add_popularity(0, 8.0, ts=0.0)
        decayed.append(float(cat.popularity_at(np.array([0]), 2.0)[0]))
    assert decayed == pytest.approx([2.0, 4.0])  # two half-lives of 1 s, or one of 2 s
    with pytest.raises(SettingsError):
        Settings.of(model_half_life_s=-1.0)
