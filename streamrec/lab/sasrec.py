"""SASRec (Kang & McAuley 2018) retrained on a schedule: the sequential model a team already runs, as Gorse refits.

A causal self-attention encoder over the user's last ``max_len`` items (learned positional embeddings, pre-norm
blocks, item embeddings shared between input and output) predicts the next item at every position. It trains with
softmax cross-entropy over all items when the vocabulary is small (``full_softmax_items``), else over the target
and ``negatives`` uniformly sampled items shared by the batch — the CE loss that makes SASRec competitive, at a
cost one CPU core can pay.

Deployment, as an hourly job would do it: every ``retrain_every`` events the model is trained **from scratch on
all events seen so far** (nothing after), and between retrains every list comes from that last model, fed the
user's current sequence (events since the retrain included, as input only). Items unseen at the last retrain
have no embedding: they are skipped in the input and cannot be recommended; a user with no known item, and
everyone before the first retrain, gets decayed popularity. The list rules are the other baselines'
(:mod:`streamrec.lab.baselines`). Consecutive repeats of one item (view → cart → buy) are one sequence step.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from streamrec.lab.baselines import PopularityBaseline, _fill
from streamrec.model.events import ITEM_EVENT_TYPES, Event, ItemEmbedding
from streamrec.settings import Settings

PAD = 0
TORCH_THREADS = 1
UNKNOWN_LENGTH_RETRAIN_EVERY = 1_000
"""Events between retrains when neither ``retrain_every`` nor the log's length is given."""
"""Item index 0 pads short sequences; real items are 1..V in order of first appearance."""


@dataclass(frozen=True)
class SasrecParams:
    """Model size, training budget and the retrain schedule."""

    dim: int = 64
    max_len: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    epochs: int = 10
    batch: int = 32
    lr: float = 3e-3
    negatives: int = 1_024
    """Sampled items per batch when the vocabulary is larger than ``full_softmax_items``."""
    full_softmax_items: int = 5_000
    retrains: int = 24
    """Retrains per replay when ``retrain_every`` is not given (``ceil(events / retrains)`` events apart)."""
    retrain_every: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Block(nn.Module):
    """Pre-norm transformer block: causal multi-head self-attention, then a two-layer feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.p if self.training else 0.0)
        h = h + self.drop(self.out(a.transpose(1, 2).reshape(b, n, d)))
        return h + self.drop(self.ff(self.norm2(h)))


class SASRec(nn.Module):
    """Item + position embeddings → causal blocks → a hidden state per position, scored against item embeddings."""

    def __init__(self, n_items: int, p: SasrecParams, sparse: bool = False) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items + 1, p.dim, padding_idx=PAD, sparse=sparse)
        self.positions = nn.Embedding(p.max_len, p.dim)
        self.blocks = nn.ModuleList(_Block(p.dim, p.heads, p.dropout) for _ in range(p.blocks))
        self.norm = nn.LayerNorm(p.dim)
        self.drop = nn.Dropout(p.dropout)
        self.scale = math.sqrt(p.dim)
        self.max_len = p.max_len
        nn.init.normal_(self.items.weight, std=p.dim**-0.5)
        with torch.no_grad():
            self.items.weight[PAD].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq`` [B, L ≤ max_len], right-aligned (left-padded) → hidden states [B, L, dim].

        A position attends to itself and to the real items before it, never to padding: so a sequence's last
        state is the same padded or not (positions count back from the end).
        """
        n = seq.shape[1]
        h = self.items(seq) * self.scale + self.positions.weight[self.max_len - n :]
        h = self.drop(h)
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        allowed = (causal & (seq != PAD)[:, None, :]) | torch.eye(n, dtype=torch.bool)
        allowed = allowed[:, None]  # one mask for every head
        for block in self.blocks:
            h = block(h, allowed)
        return self.norm(h)


@dataclass
class Retrain:
    """One scheduled retrain: how many events it trained on, its vocabulary, its wall time."""

    events: int
    items: int
    windows: int
    seconds: float
    loss: float


def training_windows(sequences: list[list[int]], max_len: int) -> np.ndarray:
    """Every user's sequence cut from its end into windows of ``max_len + 1`` items, left-padded.

    >>> training_windows([[1, 2, 3, 4, 5]], 2).tolist()
    [[3, 4, 5], [1, 2, 3]]
    """
    rows: list[np.ndarray] = []
    for seq in sequences:
        for end in range(len(seq), 1, -max_len):
            chunk = seq[max(0, end - max_len - 1) : end]
            row = np.zeros(max_len + 1, np.int64)
            row[max_len + 1 - len(chunk) :] = chunk
            rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, max_len + 1), np.int64)


def train_sasrec(sequences: list[list[int]], n_items: int, p: SasrecParams, seed: int) -> tuple[SASRec, int, float]:
    """A fresh model trained on ``sequences`` (item indexes 1..n_items); returns it, the windows and the last loss."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    full = n_items <= p.full_softmax_items
    # sampled: each step touches a few thousand item rows, so the item table gets sparse gradients and a lazy Adam
    # (a dense Adam step over a 50,000-item table costs as much as the rest of the step)
    model = SASRec(n_items, p, sparse=not full)
    windows = training_windows(sequences, p.max_len)
    table = model.items.weight
    if full:
        optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam(model.parameters(), lr=p.lr)]
    else:
        rest = [w for w in model.parameters() if w is not table]
        optimizers = [torch.optim.SparseAdam([table], lr=p.lr), torch.optim.Adam(rest, lr=p.lr)]
    loss_value = float("nan")
    model.train()
    for _ in range(p.epochs):
        order = rng.permutation(len(windows))
        for start in range(0, len(windows), p.batch):
            rows = torch.from_numpy(windows[order[start : start + p.batch]])
            x, y = rows[:, :-1], rows[:, 1:]
            h = model(x)
            known = y != PAD
            hidden, target = h[known], y[known]
            if full:
                logits = hidden @ table.T
                logits[:, PAD] = -torch.inf
                loss = F.cross_entropy(logits, target)
            else:
                neg = torch.from_numpy(rng.integers(1, n_items + 1, size=p.negatives))
                pos_logit = (hidden * F.embedding(target, table, sparse=True)).sum(-1, keepdim=True)
                neg_logits = hidden @ F.embedding(neg, table, sparse=True).T
                neg_logits = neg_logits.masked_fill(neg[None, :] == target[:, None], -torch.inf)
                logits = torch.cat([pos_logit, neg_logits], dim=1)
                loss = F.cross_entropy(logits, torch.zeros(len(target), dtype=torch.long))
            for opt in optimizers:
                opt.zero_grad()
            loss.backward()
            for opt in optimizers:
                opt.step()
            loss_value = float(loss.detach())
    model.eval()
    return model, len(windows), loss_value


@dataclass
class _Served:
    """The model between retrains, ready to serve: its vocabulary and item table (row i = item index i + 1).

    Scoring stays in torch: numpy's BLAS is not held to one thread, and its idle threads spin on a busy machine.
    """

    model: SASRec
    index_of: dict[str, int]
    ids: list[str]
    table: torch.Tensor = field(repr=False)


class SasrecSystem:
    """SASRec retrained from scratch every ``retrain_every`` events, serving from its last model in between."""

    name = "sasrec"

    def __init__(self, settings: Settings, params: SasrecParams | None = None, total_events: int = 0) -> None:
        torch.set_num_threads(TORCH_THREADS)  # the budget is one core, as in the parallel harness's children
        self.params = params or SasrecParams()
        per_log = math.ceil(total_events / self.params.retrains) if total_events > 0 else UNKNOWN_LENGTH_RETRAIN_EVERY
        self.every = self.params.retrain_every or per_log
        self.seed = settings.retrieval.seed
        self.popularity = PopularityBaseline(settings)
        self.events: list[tuple[str, str]] = []
        """Every (user, item) learned, in order: the training set of the next retrain."""
        self.sequences: dict[str, list[str]] = {}
        self.served: _Served | None = None
        self.retrains: list[Retrain] = []

    def upsert_item(self, emb: ItemEmbedding) -> None:
        self.popularity.upsert_item(emb)

    def learn(self, event: Event) -> None:
        self.popularity.learn(event)
        if event.item_id is None or event.type not in ITEM_EVENT_TYPES:
            return
        self.events.append((event.user_id, event.item_id))
        seq = self.sequences.setdefault(event.user_id, [])
        if not seq or seq[-1] != event.item_id:
            seq.append(event.item_id)
        if len(self.events) % self.every == 0:
            self.retrain()

    def retrain(self) -> None:
        """Train a new model from scratch on every event learned so far, and serve from it."""
        t0 = time.perf_counter()
        index_of: dict[str, int] = {}
        by_user: dict[str, list[int]] = {}
        for user, item in self.events:
            idx = index_of.setdefault(item, len(index_of) + 1)
            seq = by_user.setdefault(user, [])
            if not seq or seq[-1] != idx:
                seq.append(idx)
        seed = self.seed + len(self.retrains)
        model, windows, loss = train_sasrec(list(by_user.values()), len(index_of), self.params, seed)
        table = model.items.weight.detach()[1:].clone()
        self.served = _Served(model, index_of, list(index_of), table)
        self.retrains.append(Retrain(len(self.events), len(index_of), windows, time.perf_counter() - t0, loss))

    def scores(self, user_id: str) -> torch.Tensor | None:
        """The served model's score of every item in its vocabulary for this user (None: popularity serves)."""
        served = self.served
        if served is None:
            return None
        # known items only: those that came after the retrain have no embedding yet
        known = [served.index_of[i] for i in self.sequences.get(user_id, ()) if i in served.index_of]
        if not known:
            return None
        with torch.no_grad():
            h = served.model(torch.tensor([known[-self.params.max_len :]]))[0, -1]
            return served.table @ h

    def recommend(self, user_id: str, now: float, k: int) -> list[str]:
        hist = self.popularity.histories.get(user_id)
        exclude = hist.excluded() if hist else set()
        scores = self.scores(user_id)
        if scores is None:
            return self.popularity.top(k, exclude)
        assert self.served is not None
        top = torch.topk(scores, min(len(scores), k + len(exclude))).indices.tolist()
        return _fill([self.served.ids[i] for i in top], self.popularity, k, exclude)

    def stats(self) -> dict[str, Any]:
        """Training cost beside quality: retrains, events apart, seconds in total and per retrain."""
        seconds = [r.seconds for r in self.retrains]
        return {
            "params": self.params.to_dict(),
            "retrain_every": self.every,
            "retrains": len(self.retrains),
            "train_seconds": sum(seconds),
            "train_seconds_mean": sum(seconds) / len(seconds) if seconds else 0.0,
            "per_retrain": [asdict(r) for r in self.retrains],
        }
