"""Topic contracts from ``topics/*.json``: names, partitions, keys, retention, value schemas — and applying them.

``topics/`` is the one readable place where every topic is declared; ``streamrec topics apply`` creates the
missing ones on the broker and services can read the JSON Schemas from the same files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamrec.io.kafka import client_kwargs
from streamrec.settings import KafkaSettings

TOPICS_DIR_ENV = "STREAMREC_TOPICS_DIR"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    description: str
    partitions: int
    key: str
    config: dict[str, str]
    schema: dict[str, Any]


def topics_dir() -> Path:
    """``$STREAMREC_TOPICS_DIR`` or the repository's ``topics/`` folder."""
    override = os.environ.get(TOPICS_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "topics"


def load_topics(directory: Path | None = None) -> dict[str, TopicSpec]:
    """All topic specs by logical name."""
    directory = directory or topics_dir()
    if not directory.is_dir():
        raise FileNotFoundError(f"topic contracts not found in {directory} (set {TOPICS_DIR_ENV})")
    specs: dict[str, TopicSpec] = {}
    for path in sorted(directory.glob("*.json")):
        d = orjson.loads(path.read_bytes())
        specs[d["name"]] = TopicSpec(
            name=d["name"],
            description=d.get("description", ""),
            partitions=int(d["partitions"]),
            key=d["key"],
            config={k: str(v) for k, v in d.get("config", {}).items()},
            schema=d["schema"],
        )
    return specs


async def apply_topics(kafka: KafkaSettings, specs: dict[str, TopicSpec] | None = None) -> list[str]:
    """Create every declared topic that does not exist yet; returns the names created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    specs = specs or load_topics()
    admin = AIOKafkaAdminClient(**client_kwargs(kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name=kafka.topic(spec.name),
                num_partitions=spec.partitions,
                replication_factor=kafka.replication_factor,
                topic_configs=spec.config,
            )
            for spec in specs.values()
            if kafka.topic(spec.name) not in existing
        ]
        if new:
            await admin.create_topics(new)
        return [t.name for t in new]
    finally:
        await admin.close()
