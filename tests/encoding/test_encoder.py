"""The text encoder (all-MiniLM-L6-v2 on CPU) and the hashed fallback vectors for items without text."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from streamrec.encoding.encoder import (
    BUNDLED_MODEL_NAME,
    MODEL_NAME_ENV,
    EncoderError,
    TextEncoder,
    category_words,
    fallback_vector,
    has_item_text,
    item_text,
    join_sentences,
    length_buckets,
    price_band,
    resolve_device,
    resolve_model_path,
)
from streamrec.lab.synthetic import make_shop
from streamrec.model.events import Item
from streamrec.settings import Settings

DIM = 384
UNIT_TOL = 1e-5
SAME_TEXT_COSINE = 0.999
SAME_CATEGORY_COSINE = 0.75
OTHER_CATEGORY_COSINE = 0.3
PUBLISHED_TOL = 5e-4
CUDA_MIN_COSINE = 0.999
"""Per text, fp16 on the GPU against fp32 on the CPU (the CUDA path's default precision)."""
SAME_RESULT_COSINE = 0.9999
"""fp16 results of one text in differently composed batches (padding changes the rounding, not the vector)."""
CUDA_TEXTS = 300
CUDA_ODD_BATCH = 7


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    """The fp32 reference (bf16 autocast, where the CPU runs it by default, is tested in test_precision.py)."""
    return TextEncoder.from_settings(Settings.of(device="cpu", encoder_precision="fp32"))


def _item(item_id: str, title: str = "", category: str | None = None, **kw: str) -> Item:
    return Item(item_id=item_id, title=title, ts=1.0, category=category, **kw)


# --- TextEncoder -----------------------------------------------------------------------------------------


def test_shape_unit_norm_and_deterministic(encoder: TextEncoder) -> None:
    texts = ["red cotton t-shirt", "stainless steel water bottle", "wireless noise-cancelling headphones"]
    first = encoder.encode(texts)
    assert encoder.dim == DIM
    assert first.shape == (len(texts), DIM)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=UNIT_TOL)
    np.testing.assert_array_equal(first, encoder.encode(texts))


def test_empty_input(encoder: TextEncoder) -> None:
    assert encoder.encode([]).shape == (0, DIM)
    assert encoder.encode([]).dtype == np.float32
    assert encoder.embed_items([]) == []


def test_single_string_is_rejected(encoder: TextEncoder) -> None:
    with pytest.raises(TypeError):
        encoder.encode("not a list")  # type: ignore[arg-type]


def test_order_preserved_under_length_bucketing(encoder: TextEncoder) -> None:
    long_text = " ".join(["a very long and detailed product description that goes on"] * 40)  # > max_length
    texts = [
        "mug",
        long_text,
        "ceramic coffee mug with a comfortable handle, dishwasher safe, 350 ml",
        "",
        "lamp",
        "a compact folding bicycle for commuters with seven gears and mudguards",
        "USB-C cable, 2 m",
    ]
    batched = encoder.encode(texts, batch_size=2)
    alone = np.vstack([encoder.encode([text]) for text in texts])
    cosines = (batched * alone).sum(axis=1)
    assert np.all(cosines >= SAME_TEXT_COSINE), cosines
    # and the rows are not interchangeable: each row is closest to its own text
    assert list((batched @ alone.T).argmax(axis=1)) == list(range(len(texts)))


def test_batches_are_what_tokenising_each_bucket_alone_gives(encoder: TextEncoder) -> None:
    texts = ["USB-C cable, 2 m", "word " * 400, "", "naïve café — 東京", "mug", "a folding bicycle with seven gears"]
    seen: list[int] = []
    for rows, batch in encoder._batches(texts, batch_size=4):
        alone = encoder.tokenizer(
            [texts[i] for i in rows], padding=True, truncation=True, max_length=encoder.max_length, return_tensors="pt"
        )
        assert set(batch.keys()) == set(alone.keys())
        for key in alone:
            assert torch.equal(batch[key], alone[key]), key
        seen += rows
    assert sorted(seen) == list(range(len(texts)))
    assert seen[0] == 1  # longest first: the truncated one


def test_chunks_of_a_long_call_give_the_same_vectors(encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [item_text(item) for item in make_shop(23, 1).items]
    whole = encoder.encode(texts, batch_size=4)
    monkeypatch.setattr("streamrec.encoding.encoder.TOKENIZE_CHUNK", 5)
    np.testing.assert_allclose(encoder.encode(texts, batch_size=4), whole, atol=UNIT_TOL)


def test_length_buckets_partition_sorted_longest_first() -> None:
    lengths = [3, 10, 1, 7, 7, 2, 9]
    buckets = length_buckets(lengths, 3)
    assert [len(b) for b in buckets] == [3, 3, 1]
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in buckets for i in b]
    assert flat == sorted(lengths, reverse=True)
    assert length_buckets([], 4) == []
    with pytest.raises(ValueError):
        length_buckets(lengths, 0)


@pytest.mark.parametrize(
    ("anchor", "near", "far"),
    [
        ("trail running shoes", "lightweight sneakers for jogging", "espresso coffee beans"),
        ("smartphone with a great camera", "mobile phone, 48 MP photos", "organic cotton bath towel"),
    ],
)
def test_semantic_sanity(encoder: TextEncoder, anchor: str, near: str, far: str) -> None:
    a, n, f = encoder.encode([anchor, near, far])
    assert float(a @ n) > float(a @ f)


def test_matches_published_sentence_transformers_similarities(encoder: TextEncoder) -> None:
    # The example in sentence-transformers' README / quickstart for all-MiniLM-L6-v2:
    #   similarities = model.similarity(embeddings, embeddings)
    #   tensor([[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]])
    texts = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    published = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    vectors = encoder.encode(texts)
    np.testing.assert_allclose(vectors @ vectors.T, published, atol=PUBLISHED_TOL)


def test_equals_manual_mean_pooling(encoder: TextEncoder) -> None:
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_path(BUNDLED_MODEL_NAME)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    text = "hello world"
    with torch.no_grad():
        batch = tokenizer([text], return_tensors="pt")
        hidden = model(**batch).last_hidden_state[0]
    mask = batch["attention_mask"][0].unsqueeze(-1).float()
    reference = ((hidden * mask).sum(0) / mask.sum()).numpy()
    reference /= np.linalg.norm(reference)
    assert float(encoder.encode([text])[0] @ reference) >= 0.9999


# --- item text --------------------------------------------------------------------------------------------


def test_item_text_joins_parts_and_skips_missing() -> None:
    full = _item("i1", "Trail Runner 2", "Shoes > Running", description="Grippy sole.\n Light.", brand="Acme")
    assert item_text(full) == "Trail Runner 2. Category: Shoes > Running. Brand: Acme. Grippy sole. Light."
    assert item_text(_item("i2", "Mug!", description="  ")) == "Mug!"
    assert item_text(_item("i3", "", "Kitchen", description="A pan")) == "Category: Kitchen. A pan"
    assert join_sentences(["", "one?", "two"]) == "one? two"


# --- fallback vectors -----------------------------------------------------------------------------------


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_fallback_category_geometry() -> None:
    seed = 7
    shoes = [fallback_vector(_item(f"s{i}", category="4756105"), DIM, seed) for i in range(10)]
    other = [fallback_vector(_item(f"o{i}", category="982926"), DIM, seed) for i in range(10)]
    assert {source for _, source in shoes + other} == {"category"}
    for vector, _ in shoes + other:
        assert vector.dtype == np.float32 and vector.shape == (DIM,)
        assert abs(np.linalg.norm(vector) - 1.0) < UNIT_TOL
    for i, (a, _) in enumerate(shoes):
        for b, _ in shoes[i + 1 :]:
            assert _cos(a, b) >= SAME_CATEGORY_COSINE
            assert not np.array_equal(a, b)  # the id part keeps items distinct
        for b, _ in other:
            assert abs(_cos(a, b)) < OTHER_CATEGORY_COSINE


def test_fallback_id_only_and_seed() -> None:
    a, source = fallback_vector(_item("x1"), DIM, 7)
    b, _ = fallback_vector(_item("x2", category="  "), DIM, 7)
    assert source == "id"
    assert abs(np.linalg.norm(a) - 1.0) < UNIT_TOL
    assert abs(_cos(a, b)) < OTHER_CATEGORY_COSINE
    np.testing.assert_array_equal(a, fallback_vector(_item("x1"), DIM, 7)[0])
    assert abs(_cos(a, fallback_vector(_item("x1"), DIM, 8)[0])) < OTHER_CATEGORY_COSINE


_SUBPROCESS_SNIPPET = """
import sys
from streamrec.encoding.encoder import fallback_vector
from streamrec.model.events import Item
for item in (Item("sku-1", "", 1.0, category="4756105"), Item("sku-2", "", 1.0)):
    sys.stdout.write(fallback_vector(item, 384, 7)[0].tobytes().hex() + "\\n")
"""


def test_fallback_is_deterministic_across_processes_and_hash_seeds() -> None:
    items = (_item("sku-1", category="4756105"), _item("sku-2"))
    expected = [fallback_vector(item, DIM, 7)[0].tobytes().hex() for item in items]
    assert expected == [fallback_vector(item, DIM, 7)[0].tobytes().hex() for item in items]
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS_SNIPPET], env=env, capture_output=True, text=True, check=True
        )
        assert result.stdout.split() == expected


# --- embed_items --------------------------------------------------------------------------------------------


def test_embed_items_mixed_keeps_order_and_sources(encoder: TextEncoder) -> None:
    items = [
        _item("t1", "Trail running shoes", "Shoes", description="Light and grippy."),
        _item("c1", "", "4756105"),
        _item("n1"),
        _item("t2", "", description="Espresso coffee beans, 1 kg"),
        _item("c2", "", "4756105"),
    ]
    embeddings = encoder.embed_items(items)
    assert [e.item.item_id for e in embeddings] == ["t1", "c1", "n1", "t2", "c2"]
    assert [e.source for e in embeddings] == ["text", "category", "id", "text", "category"]
    assert {e.model for e in embeddings} == {BUNDLED_MODEL_NAME}
    for e in embeddings:
        assert e.vector.shape == (DIM,) and e.vector.dtype == np.float32
        assert abs(np.linalg.norm(e.vector) - 1.0) < UNIT_TOL
    texts = encoder.encode([item_text(items[0]), item_text(items[3])])
    assert float(embeddings[0].vector @ texts[0]) >= SAME_TEXT_COSINE
    assert float(embeddings[3].vector @ texts[1]) >= SAME_TEXT_COSINE
    np.testing.assert_array_equal(embeddings[1].vector, fallback_vector(items[1], DIM, Settings().retrieval.seed)[0])


# --- configuration errors ---------------------------------------------------------------------------------


def test_unknown_model_name_is_a_helpful_error() -> None:
    with pytest.raises(EncoderError) as info:
        resolve_model_path("no-such-org/no-such-model-streamrec")
    message = str(info.value)
    assert BUNDLED_MODEL_NAME in message and MODEL_NAME_ENV in message and "local" in message
    with pytest.raises(EncoderError):
        TextEncoder.from_settings(Settings.of(device="cpu", model_name="no-such-org/no-such-model-streamrec"))


def test_local_folder_without_a_model_is_an_error(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(EncoderError, match=MODEL_NAME_ENV):
        TextEncoder.from_settings(Settings.of(device="cpu", model_name=str(tmp_path)))


def test_bundled_model_resolves_to_a_local_folder() -> None:
    path = resolve_model_path(BUNDLED_MODEL_NAME)
    assert os.path.isfile(os.path.join(path, "config.json"))
    assert resolve_model_path(path) == path


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(EncoderError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(EncoderError, match="CUDA"):
        TextEncoder.from_settings(Settings.of(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
def test_cuda_fp16_agrees_with_cpu_fp32(encoder: TextEncoder) -> None:
    shop = make_shop(CUDA_TEXTS, 1)
    texts = [item_text(item) for item in shop.items] + ["short", "word " * 400]  # one far over max_length
    gpu = TextEncoder.from_settings(Settings.of(device="cuda"))
    assert gpu.device.type == "cuda" and next(gpu.model.parameters()).dtype == torch.float16
    on_gpu = gpu.encode(texts)
    assert on_gpu.dtype == np.float32 and on_gpu.shape == (len(texts), DIM)
    np.testing.assert_allclose(np.linalg.norm(on_gpu, axis=1), 1.0, atol=UNIT_TOL)
    assert float(np.min(np.sum(on_gpu * encoder.encode(texts), axis=1))) >= CUDA_MIN_COSINE
    perm = np.random.default_rng(0).permutation(len(texts))
    for again in (gpu.encode([texts[i] for i in perm]), gpu.encode(texts, batch_size=CUDA_ODD_BATCH)[perm]):
        assert float(np.min(np.sum(again * on_gpu[perm], axis=1))) >= SAME_RESULT_COSINE


def test_resolve_device_auto_prefers_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(EncoderError):
        resolve_device("tpu")


def test_fp16_on_cpu_is_refused() -> None:
    with pytest.raises(EncoderError, match="fp16"):
        TextEncoder.from_settings(Settings.of(device="cpu"), half=True)


# --- items without a title ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "text"),
    [
        (
            Item("p1", "", 1.0, category="electronics.audio.headphone", brand="sony", price=79.9),
            "Category: electronics audio headphone. Brand: sony. Price: mid-range",
        ),
        (
            Item("p2", "", 1.0, category="computers.components.power_supply", price=24.99),
            "Category: computers components power supply. Price: budget",
        ),
        (
            Item("p3", "", 1.0, category="2053013552226107603", brand="lucente", price=250.0),
            "Brand: lucente. Price: premium",
        ),
        (Item("p4", "", 1.0, category="Kitchen", price=0.0), "Category: Kitchen"),  # no positive price: no band
        (Item("p5", "", 1.0, price=12.0, description="A pan"), "Price: budget. A pan"),
        (Item("p6", "", 1.0, category="2520377"), ""),  # only an opaque id: nothing to read
        (Item("p7", "", 1.0, category="2520377", price=30.0), ""),  # a band alone would make every item alike
        (Item("p8", "", 1.0, brand="  "), ""),
        # a title names the product: no band, and opaque ids stay out of the text
        (Item("t1", "Kettle 1.7 l", 1.0, category="123", brand="bosch", price=30.0), "Kettle 1.7 l. Brand: bosch"),
        (Item("t2", "Toy Story (1995)", 1.0, category="Children's"), "Toy Story (1995). Category: Children's"),
    ],
)
def test_item_text_without_a_title(item: Item, text: str) -> None:
    assert item_text(item) == text
    assert has_item_text(item) == bool(text)


@pytest.mark.parametrize(
    ("price", "band"),
    [(None, None), (0.0, None), (-3.0, None), (math.inf, None), (0.5, "budget"), (24.99, "budget"),
     (25.0, "mid-range"), (249.99, "mid-range"), (250.0, "premium"), (1e6, "premium")],
)  # fmt: skip
def test_price_bands(price: float | None, band: str | None) -> None:
    assert price_band(price) == band


def test_category_words() -> None:
    assert category_words(" electronics.audio.headphone ") == "electronics audio headphone"
    assert category_words("apparel.shoes__sport..kids") == "apparel shoes sport kids"
    assert category_words("Shoes > Running") == "Shoes > Running"  # a phrase, not a code
    assert category_words("Sci-Fi") == "Sci-Fi"


def test_embed_items_reads_title_less_items_with_words_and_keeps_opaque_ones_hashed(encoder: TextEncoder) -> None:
    items = [
        Item("p1", "", 1.0, category="electronics.audio.headphone", brand="sony", price=79.9),
        Item("p2", "", 1.0, category="2520377"),
        Item("p3", "", 1.0, category="electronics.audio.headphone", brand="jbl", price=15.0),
        Item("p4", "", 1.0, category="appliances.kitchen.kettle", brand="tefal", price=30.0),
    ]
    embeddings = encoder.embed_items(items)
    assert [e.source for e in embeddings] == ["text", "category", "text", "text"]
    expected = encoder.encode([item_text(items[0]), item_text(items[2]), item_text(items[3])])
    for e, vector in zip([embeddings[0], embeddings[2], embeddings[3]], expected, strict=True):
        assert float(e.vector @ vector) >= SAME_TEXT_COSINE
    np.testing.assert_array_equal(embeddings[1].vector, fallback_vector(items[1], DIM, Settings().retrieval.seed)[0])
    headphones = float(embeddings[0].vector @ embeddings[2].vector)
    assert headphones > float(embeddings[0].vector @ embeddings[3].vector)  # the words carry the category
