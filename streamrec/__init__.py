"""streamrec: streaming, real-time recommendations with online learning on Kafka.

The public API, loaded on first use (``import streamrec`` stays cheap for the command line):

>>> import streamrec
>>> streamrec.Settings.of(top_k=5).retrieval.top_k
5
>>> sorted(streamrec.__all__)[:3]
['DictProfileStore', 'Event', 'FusionRanker']
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Settings": "streamrec.settings",
    "SettingsError": "streamrec.settings",
    "Event": "streamrec.model.events",
    "Item": "streamrec.model.events",
    "ItemEmbedding": "streamrec.model.events",
    "InvalidMessage": "streamrec.model.events",
    "parse_event": "streamrec.model.events",
    "parse_item": "streamrec.model.events",
    "UserProfile": "streamrec.model.profiles",
    "DictProfileStore": "streamrec.model.profiles",
    "ProfileStore": "streamrec.model.profiles",
    "FusionRanker": "streamrec.model.ranker",
    "SharedModel": "streamrec.model.shared_model",
    "Recommender": "streamrec.model.recommender",
    "Recommendation": "streamrec.model.recommender",
    "TextEncoder": "streamrec.encoding.encoder",
    "latest_recommendation": "streamrec.io.recommendations",
    "read_log": "streamrec.io.logs",
    "evaluate": "streamrec.lab.evaluation",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'streamrec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
