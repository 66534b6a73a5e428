"""The ``rules`` topic from outside the workers: set or delete a named rule, read the rules in force.

What ``streamrec rules set|list|clear`` does. A rule is validated here with the workers' own validator before it is
published, so a command never sends what every worker would dead-letter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka.structs import ConsumerRecord

from streamrec.io.kafka import make_producer, read_to_end
from streamrec.model.events import InvalidMessage, dumps
from streamrec.model.rules import MAX_RULE_BYTES, Rule, parse_rule, rule_name
from streamrec.settings import KafkaSettings


@dataclass
class RulesInForce:
    """The rules topic read to its end: the valid rules by name, and the newest invalid value of a name, if any
    (workers dead-letter those and keep the name's earlier rule)."""

    rules: dict[str, Rule] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


async def publish_rule(kafka: KafkaSettings, name: str, rule: Rule | None) -> None:
    """Set ``rule`` under ``name`` (None: a tombstone, which deletes the rule)."""
    value = None if rule is None else dumps(rule.to_dict())
    producer = make_producer(kafka, max_request_size=2 * MAX_RULE_BYTES)
    await producer.start()
    try:
        await producer.send_and_wait(kafka.topic("rules"), value, key=name.encode())
    finally:
        await producer.stop()


async def read_rules(kafka: KafkaSettings) -> RulesInForce:
    """Every rule in force, as a worker holds them after reading the topic."""
    out = RulesInForce()

    def keep(record: ConsumerRecord) -> None:
        try:
            name = rule_name(record.key)
        except InvalidMessage:
            return
        if record.value is None:
            out.rules.pop(name, None)
            out.rejected.pop(name, None)
            return
        try:
            out.rules[name] = parse_rule(record.key, record.value)
            out.rejected.pop(name, None)
        except InvalidMessage as exc:
            out.rejected[name] = str(exc)

    await read_to_end(kafka, kafka.topic("rules"), keep)
    return out
