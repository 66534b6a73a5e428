"""Business rules: what a shop never shows, what it pushes or holds back, and how many of a kind one list may hold.

Rules arrive on the compacted ``rules`` topic, one named rule per key (a tombstone deletes it), and every worker
applies all rules in force together (:class:`RuleSet`):

* ``exclude`` — item ids, categories or brands that no list may contain;
* ``boost`` — a multiplier per category or brand (above 1 pushes, below 1 demotes): a score ``s`` becomes
  ``s·m`` when ``s ≥ 0`` and ``s/m`` otherwise, so a multiplier above 1 always moves an item up;
* ``cap`` — at most ``per_category`` items of one category and ``per_brand`` of one brand in one list.

Several rules add up: exclusions are their union, multipliers of the same category or brand multiply, the
smallest cap wins. A rule that breaks the contract (``topics/rules.json``) raises :class:`InvalidMessage` with
the reason, which the worker sends to ``dead-letters``; the rules in force stay as they were.

>>> rule = parse_rule(b"no-acme", b'{"exclude": {"brands": ["acme"]}, "cap": {"per_category": 3}}')
>>> rule.exclude_brands, rule.max_per_category
(frozenset({'acme'}), 3)
>>> rules = RuleSet.of([rule, parse_rule(b"shoes", b'{"boost": {"categories": {"shoes": 1.5}}}')])
>>> rules.boost_categories, rules.max_per_category, rules.max_per_brand
({'shoes': 1.5}, 3, None)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamrec.model.events import MAX_ATTR_LEN, MAX_ID_LEN, InvalidMessage, loads_message

MAX_RULE_BYTES = 1 << 20
"""A rule's value may be this large (a long exclusion list), larger than an event or an item."""
MAX_RULE_ENTRIES = 100_000
"""Entries one list or map of a rule may hold."""
MAX_MULTIPLIER = 1e6
_RULE_KEYS = frozenset({"exclude", "boost", "cap", "description", "ts"})
_EXCLUDE_KEYS = frozenset({"item_ids", "categories", "brands"})
_BOOST_KEYS = frozenset({"categories", "brands"})
_CAP_KEYS = frozenset({"per_category", "per_brand"})


@dataclass(frozen=True)
class Rule:
    """One named rule, as validated from the ``rules`` topic."""

    name: str
    exclude_items: frozenset[str] = frozenset()
    exclude_categories: frozenset[str] = frozenset()
    exclude_brands: frozenset[str] = frozenset()
    boost_categories: Mapping[str, float] = field(default_factory=dict)
    boost_brands: Mapping[str, float] = field(default_factory=dict)
    max_per_category: int | None = None
    max_per_brand: int | None = None
    description: str | None = None
    ts: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The rule's value on the ``rules`` topic (its key is the name)."""
        out: dict[str, Any] = {}
        exclude = {
            k: sorted(v)
            for k, v in (
                ("item_ids", self.exclude_items),
                ("categories", self.exclude_categories),
                ("brands", self.exclude_brands),
            )
            if v
        }
        boost = {k: dict(v) for k, v in (("categories", self.boost_categories), ("brands", self.boost_brands)) if v}
        caps = (("per_category", self.max_per_category), ("per_brand", self.max_per_brand))
        cap = {k: v for k, v in caps if v is not None}
        for name, part in (("exclude", exclude), ("boost", boost), ("cap", cap)):
            if part:
                out[name] = part
        if self.description is not None:
            out["description"] = self.description
        if self.ts is not None:
            out["ts"] = self.ts
        return out


def _keys(obj: Any, allowed: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InvalidMessage(f"'{what}' must be an object, got {type(obj).__name__}")
    extra = obj.keys() - allowed
    if extra:
        raise InvalidMessage(f"unknown field(s) in '{what}': {', '.join(sorted(extra))}")
    if not obj:
        raise InvalidMessage(f"'{what}' is empty")
    return obj


def _names(value: Any, what: str, max_len: int) -> frozenset[str]:
    if not isinstance(value, list):
        raise InvalidMessage(f"'{what}' must be a list of strings, got {type(value).__name__}")
    if len(value) > MAX_RULE_ENTRIES:
        raise InvalidMessage(f"'{what}' has {len(value)} entries, more than {MAX_RULE_ENTRIES}")
    for v in value:
        if not isinstance(v, str) or not 1 <= len(v) <= max_len:
            raise InvalidMessage(f"'{what}' must hold strings of 1..{max_len} characters, got {v!r}")
    return frozenset(value)


def _multipliers(value: Any, what: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise InvalidMessage(f"'{what}' must map names to multipliers, got {type(value).__name__}")
    if len(value) > MAX_RULE_ENTRIES:
        raise InvalidMessage(f"'{what}' has {len(value)} entries, more than {MAX_RULE_ENTRIES}")
    out: dict[str, float] = {}
    for name, m in value.items():
        if not 1 <= len(name) <= MAX_ATTR_LEN:
            raise InvalidMessage(f"'{what}' names must have 1..{MAX_ATTR_LEN} characters")
        if isinstance(m, bool) or not isinstance(m, int | float) or not math.isfinite(m) or not 0 < m <= MAX_MULTIPLIER:
            raise InvalidMessage(f"'{what}.{name}' must be a multiplier in (0, {MAX_MULTIPLIER:g}], got {m!r}")
        out[name] = float(m)
    return out


def _cap(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidMessage(f"'{what}' must be an integer >= 1, got {value!r}")
    return value


def rule_from_dict(name: str, obj: dict[str, Any]) -> Rule:
    """Validate a decoded rule (the ``rules`` topic contract); :class:`InvalidMessage` says what is wrong."""
    if not 1 <= len(name) <= MAX_ID_LEN:
        raise InvalidMessage(f"a rule's key is its name, of 1..{MAX_ID_LEN} characters")
    extra = obj.keys() - _RULE_KEYS
    if extra:
        raise InvalidMessage(f"unknown field(s) in rule: {', '.join(sorted(extra))}")
    if not obj.keys() & {"exclude", "boost", "cap"}:
        raise InvalidMessage("a rule needs at least one of 'exclude', 'boost', 'cap'")
    kw: dict[str, Any] = {}
    if "exclude" in obj:
        ex = _keys(obj["exclude"], _EXCLUDE_KEYS, "exclude")
        kw["exclude_items"] = _names(ex.get("item_ids", []), "exclude.item_ids", MAX_ID_LEN)
        kw["exclude_categories"] = _names(ex.get("categories", []), "exclude.categories", MAX_ATTR_LEN)
        kw["exclude_brands"] = _names(ex.get("brands", []), "exclude.brands", MAX_ATTR_LEN)
    if "boost" in obj:
        boost = _keys(obj["boost"], _BOOST_KEYS, "boost")
        kw["boost_categories"] = _multipliers(boost.get("categories", {}), "boost.categories")
        kw["boost_brands"] = _multipliers(boost.get("brands", {}), "boost.brands")
    if "cap" in obj:
        cap = _keys(obj["cap"], _CAP_KEYS, "cap")
        if "per_category" in cap:
            kw["max_per_category"] = _cap(cap["per_category"], "cap.per_category")
        if "per_brand" in cap:
            kw["max_per_brand"] = _cap(cap["per_brand"], "cap.per_brand")
    description = obj.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > MAX_ID_LEN * 4):
        raise InvalidMessage(f"'description' must be a string of at most {MAX_ID_LEN * 4} characters")
    ts = obj.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0):
        raise InvalidMessage(f"'ts' must be a number >= 0, got {ts!r}")
    return Rule(name, description=description, ts=None if ts is None else float(ts), **kw)


def rule_name(key: bytes | None) -> str:
    """A ``rules`` record's key as the rule's name; :class:`InvalidMessage` when it cannot be one."""
    try:
        name = (key or b"").decode()
    except UnicodeDecodeError:
        raise InvalidMessage("a rule's key must be its name in UTF-8") from None
    if not 1 <= len(name) <= MAX_ID_LEN:
        raise InvalidMessage(f"a rule's key is its name, of 1..{MAX_ID_LEN} characters")
    return name


def parse_rule(key: bytes | None, raw: bytes | str) -> Rule:
    """A ``rules`` record (not a tombstone) as a :class:`Rule`; :class:`InvalidMessage` with the reason otherwise."""
    return rule_from_dict(rule_name(key), loads_message(raw, MAX_RULE_BYTES))


@dataclass(frozen=True)
class RuleSet:
    """Every rule in force, combined: what lists are filtered, re-weighted and capped by."""

    rules: Mapping[str, Rule] = field(default_factory=dict)
    exclude_items: frozenset[str] = frozenset()
    exclude_categories: frozenset[str] = frozenset()
    exclude_brands: frozenset[str] = frozenset()
    boost_categories: Mapping[str, float] = field(default_factory=dict)
    boost_brands: Mapping[str, float] = field(default_factory=dict)
    max_per_category: int | None = None
    max_per_brand: int | None = None

    @classmethod
    def of(cls, rules: Iterable[Rule]) -> RuleSet:
        by_name = {r.name: r for r in rules}
        cat: dict[str, float] = {}
        brand: dict[str, float] = {}
        for r in by_name.values():
            for name, m in r.boost_categories.items():
                cat[name] = cat.get(name, 1.0) * m
            for name, m in r.boost_brands.items():
                brand[name] = brand.get(name, 1.0) * m
        caps_c = [r.max_per_category for r in by_name.values() if r.max_per_category is not None]
        caps_b = [r.max_per_brand for r in by_name.values() if r.max_per_brand is not None]
        return cls(
            rules=by_name,
            exclude_items=frozenset().union(*(r.exclude_items for r in by_name.values())),
            exclude_categories=frozenset().union(*(r.exclude_categories for r in by_name.values())),
            exclude_brands=frozenset().union(*(r.exclude_brands for r in by_name.values())),
            boost_categories=cat,
            boost_brands=brand,
            max_per_category=min(caps_c) if caps_c else None,
            max_per_brand=min(caps_b) if caps_b else None,
        )

    @classmethod
    def from_values(cls, values: Mapping[str, dict[str, Any]]) -> RuleSet:
        """The rule set of validated rule values by name (what the worker hands its core)."""
        return cls.of(rule_from_dict(name, value) for name, value in values.items())

    @property
    def excludes(self) -> bool:
        return bool(self.exclude_items or self.exclude_categories or self.exclude_brands)

    @property
    def boosts(self) -> bool:
        return bool(self.boost_categories or self.boost_brands)

    @property
    def caps(self) -> bool:
        return self.max_per_category is not None or self.max_per_brand is not None


def code_mask(names: Iterable[str], codes: Mapping[str, int], size: int) -> np.ndarray:
    """A bool array over codes ``0..size-1`` (plus one slot for "none" at the end), True for ``names``' codes."""
    mask = np.zeros(size + 1, bool)
    found = [codes[n] for n in names if n in codes]
    mask[found] = True
    return mask


def code_multipliers(boosts: Mapping[str, float], codes: Mapping[str, int], size: int) -> np.ndarray:
    """Multiplier per code ``0..size-1`` (1 where none is set; the last slot, for "none", is 1)."""
    out = np.ones(size + 1, np.float64)
    for name, m in boosts.items():
        code = codes.get(name)
        if code is not None:
            out[code] = m
    return out


def boosted(scores: np.ndarray, multiplier: np.ndarray) -> np.ndarray:
    """Scores with multipliers applied so that a multiplier above 1 always moves an item up: ``s·m`` for
    ``s ≥ 0``, ``s/m`` below 0.

    >>> boosted(np.array([2.0, -2.0, 1.0]), np.array([1.5, 2.0, 1.0])).tolist()
    [3.0, -1.0, 1.0]
    """
    return np.where(scores >= 0, scores * multiplier, scores / multiplier).astype(scores.dtype, copy=False)
