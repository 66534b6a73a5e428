"""A synthetic shop with real text, for the demo, tests and benchmarks when no dataset is given.

Items come from a handful of categories, each with its own vocabulary, brands and price range, so a text
encoder separates them; users have one or two favourite categories, item popularity is Zipf-skewed
inside a category, and event types follow a view → click → cart → purchase funnel.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from streamrec.model.events import Event, Item

CATEGORIES: dict[str, dict[str, list[str] | tuple[float, float]]] = {
    "running shoes": {
        "nouns": ["trail running shoes", "road running shoes", "marathon racing flats", "cushioned jogging sneakers"],
        "words": ["breathable mesh upper", "grippy outsole", "responsive foam midsole", "lightweight for long runs"],
        "brands": ["Stride", "Trailblaze", "Pacer"],
        "price": (60.0, 180.0),
    },
    "coffee": {
        "nouns": ["espresso coffee beans", "single-origin ground coffee", "dark roast whole beans", "decaf arabica"],
        "words": ["notes of chocolate and cherry", "freshly roasted", "fair trade", "rich crema for espresso"],
        "brands": ["Roastery", "Bean & Co", "Morning Cup"],
        "price": (8.0, 30.0),
    },
    "laptops": {
        "nouns": ["ultrabook laptop", "gaming laptop", "13-inch notebook computer", "business laptop"],
        "words": ["fast SSD storage", "long battery life", "backlit keyboard", "high-resolution display"],
        "brands": ["Nimbus", "Corebook", "Voltix"],
        "price": (600.0, 2400.0),
    },
    "mystery novels": {
        "nouns": ["detective mystery novel", "crime thriller paperback", "whodunit hardcover", "noir crime story"],
        "words": ["a gripping page-turner", "an unsolved murder", "twists until the last chapter", "a cold case"],
        "brands": ["Raven Press", "Inkwell", "Harbor Books"],
        "price": (9.0, 28.0),
    },
    "yoga": {
        "nouns": ["non-slip yoga mat", "cork yoga block", "yoga strap", "meditation cushion"],
        "words": ["for stretching and balance", "eco-friendly material", "extra thick padding", "studio quality"],
        "brands": ["Lotus", "Zenflow", "Asana"],
        "price": (15.0, 90.0),
    },
    "headphones": {
        "nouns": ["noise cancelling headphones", "wireless earbuds", "studio monitor headphones", "bluetooth headset"],
        "words": ["deep bass", "long battery life", "comfortable over-ear fit", "crystal clear calls"],
        "brands": ["Sonix", "Aurora Audio", "Beatline"],
        "price": (30.0, 400.0),
    },
    "kitchen knives": {
        "nouns": ["chef's knife", "Japanese santoku knife", "paring knife set", "bread knife"],
        "words": ["forged stainless steel", "razor sharp edge", "ergonomic handle", "for slicing vegetables"],
        "brands": ["Edgecraft", "Hoshi", "Steelman"],
        "price": (20.0, 250.0),
    },
    "board games": {
        "nouns": ["strategy board game", "cooperative family board game", "party card game", "deck-building game"],
        "words": ["for 2 to 6 players", "game night favourite", "easy to learn", "hours of replay value"],
        "brands": ["Meeple Works", "Dicebound", "Tabletop Co"],
        "price": (15.0, 80.0),
    },
}
TYPE_FUNNEL: dict[str, float] = {"view": 0.68, "click": 0.2, "add_to_cart": 0.07, "purchase": 0.03, "search": 0.02}
FAVOURITE_SHARE = 0.85
ZIPF_EXPONENT = 1.1
HOT_USER_EXPONENT = 0.8
LOG_START_TS = 1_700_000_000.0
"""Where a written log's clock starts (a fixed instant, so the same arguments write the same file)."""


@dataclass(frozen=True)
class Shop:
    items: list[Item]
    favourites: dict[str, list[str]]
    """user id → favourite categories."""


def category_names() -> list[str]:
    return list(CATEGORIES)


def make_item(rng: np.random.Generator, item_id: str, category: str, ts: float) -> Item:
    spec = CATEGORIES[category]
    noun = str(rng.choice(spec["nouns"]))  # type: ignore[arg-type]
    brand = str(rng.choice(spec["brands"]))  # type: ignore[arg-type]
    words = rng.choice(spec["words"], size=2, replace=False)  # type: ignore[arg-type]
    lo, hi = spec["price"]  # type: ignore[misc]
    return Item(
        item_id=item_id,
        title=f"{brand} {noun}",
        description=f"{str(words[0]).capitalize()}, {words[1]}.",
        category=category,
        brand=brand,
        price=round(float(rng.uniform(lo, hi)), 2),
        ts=ts,
    )


def make_shop(n_items: int, n_users: int, seed: int = 7, ts: float = 0.0) -> Shop:
    """``n_items`` items spread over the categories and ``n_users`` users with 1–2 favourite categories."""
    rng = np.random.default_rng(seed)
    cats = category_names()
    items = [make_item(rng, f"item-{i}", cats[i % len(cats)], ts) for i in range(n_items)]
    favourites = {
        f"user-{u}": [str(c) for c in rng.choice(cats, size=int(rng.integers(1, 3)), replace=False)]
        for u in range(n_users)
    }
    return Shop(items, favourites)


def make_events(shop: Shop, n_events: int, seed: int = 7, start_ts: float = 0.0, step_s: float = 1.0) -> list[Event]:
    """A skewed event stream: hot users and hot items, mostly inside each user's favourite categories.

    Drawn in bulk (one vectorised draw per attribute), so 300,000 events take about a second.
    """
    rng = np.random.default_rng(seed + 1)
    cats = category_names()
    by_cat: list[list[Item]] = [[] for _ in cats]
    code = {c: i for i, c in enumerate(cats)}
    for item in shop.items:
        by_cat[code[item.category or ""]].append(item)
    users = list(shop.favourites)
    if not users or n_events <= 0:
        return []
    user_p = 1.0 / np.arange(1, len(users) + 1) ** HOT_USER_EXPONENT
    user_p /= user_p.sum()
    types = list(TYPE_FUNNEL)
    type_p = np.array(list(TYPE_FUNNEL.values()))
    type_p /= type_p.sum()
    who = rng.choice(len(users), size=n_events, p=user_p)
    in_favourite = rng.random(n_events) < FAVOURITE_SHARE
    fav_pick = rng.random(n_events)
    any_cat = rng.integers(0, len(cats), size=n_events)
    kinds = rng.choice(len(types), size=n_events, p=type_p)
    rank_u = rng.random(n_events)
    query_pick = rng.integers(0, 1 << 30, size=n_events)
    favourite_codes = [[code[c] for c in shop.favourites[u]] for u in users]
    rank_cdf = {len(pool): _zipf_cdf(len(pool)) for pool in by_cat if pool}
    events: list[Event] = []
    for n in range(n_events):
        user = users[who[n]]
        fav = favourite_codes[who[n]]
        cat = fav[int(fav_pick[n] * len(fav))] if in_favourite[n] else int(any_cat[n])
        ts = start_ts + n * step_s
        etype = types[kinds[n]]
        if etype == "search":
            nouns = CATEGORIES[cats[cat]]["nouns"]
            events.append(Event(user, "search", ts, query=str(nouns[query_pick[n] % len(nouns)])))
            continue
        pool = by_cat[cat]
        if not pool:
            continue
        rank = int(np.searchsorted(rank_cdf[len(pool)], rank_u[n], side="right"))
        events.append(Event(user, etype, ts, item_id=pool[min(rank, len(pool) - 1)].item_id))
    return events


def _zipf_cdf(n: int) -> np.ndarray:
    """Cumulative probabilities of ranks 0..n-1 under a Zipf law bounded to ``n`` items (a long tail, no pile-up)."""
    p = 1.0 / np.arange(1, n + 1) ** ZIPF_EXPONENT
    return np.cumsum(p / p.sum())


def write_log(path: Path | str, shop: Shop, events: Sequence[Event]) -> int:
    """Write the catalogue, then the events, as one JSON object per line (``streamrec eval --format jsonl``)."""
    with open(path, "wb") as f:
        for record in [*shop.items, *events]:
            f.write(orjson.dumps(record.to_dict()) + b"\n")
    return len(shop.items) + len(events)


def main(argv: Sequence[str] | None = None) -> int:
    """Write a synthetic shop's log: a log with a known structure, to test quality claims beyond the shared logs."""
    parser = argparse.ArgumentParser(prog="python -m streamrec.lab.synthetic", description=main.__doc__)
    parser.add_argument("out", type=Path, help="the JSONL file to write")
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--step-s", type=float, default=30.0, help="seconds between two events of the stream")
    args = parser.parse_args(argv)
    if min(args.items, args.users, args.events) <= 0:
        parser.error("--items, --users and --events must be positive")
    shop = make_shop(args.items, args.users, seed=args.seed, ts=LOG_START_TS)
    events = make_events(shop, args.events, seed=args.seed, start_ts=LOG_START_TS, step_s=args.step_s)
    lines = write_log(args.out, shop, events)
    print(f"{args.out}: {len(shop.items):,} items and {len(events):,} events ({lines:,} lines)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
