"""Security settings reach every Kafka client streamrec builds; secrets stay out of reprs and logs; size limits hold.

There is no SASL/SSL broker here: these are unit checks on the options each client is *constructed* with
(aiokafka producers/consumers/admin, the encoder worker, the Faust app that runs the recommender worker).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from pathlib import Path
from typing import Any

import orjson
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streamrec.io import kafka, topics
from streamrec.model.events import InvalidMessage, parse_event
from streamrec.settings import Settings
from streamrec.worker import encoder_worker

PASSWORD = "pw-Zq8!never-log-me"
USER = "svc-streamrec"
SRC = Path(__file__).resolve().parents[2] / "streamrec"


def certifi_bundle() -> str:
    import certifi

    return certifi.where()


SASL = Settings.of(
    broker="127.0.0.1:1",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username=USER,
    sasl_password=PASSWORD,
)


class Recorder:
    """Stands in for an aiokafka client class: records constructor kwargs, connects nowhere."""

    made: list[tuple[str, dict[str, Any]]]

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.made = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.made.append((self.kind, kwargs))
        return _FakeClient()


class _FakeClient:
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def list_topics(self) -> list[str]:
        return [SASL.kafka.topic(name) for name in topics.load_topics()]


def assert_secured(kwargs: dict[str, Any], settings: Settings = SASL) -> None:
    assert kwargs["bootstrap_servers"] == settings.kafka.broker
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == USER
    assert kwargs["sasl_plain_password"] == PASSWORD
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)


def test_every_aiokafka_client_gets_sasl_and_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    producers, consumers, admins = Recorder("producer"), Recorder("consumer"), Recorder("admin")
    monkeypatch.setattr(kafka, "AIOKafkaProducer", producers)
    monkeypatch.setattr(kafka, "AIOKafkaConsumer", consumers)
    import aiokafka.admin

    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", admins)

    kafka.make_producer(SASL.kafka)
    kafka.make_consumer(SASL.kafka, "events")
    asyncio.run(topics.apply_topics(SASL.kafka))

    class NoModel:
        device = "cpu"

    stop = asyncio.Event()
    stop.set()  # the encoder worker builds its clients, starts them, sees stop and returns
    asyncio.run(encoder_worker.run_encoder(SASL, stop, encoder=NoModel()))  # type: ignore[arg-type]

    made = producers.made + consumers.made + admins.made
    assert [k for k, _ in made] == ["producer", "producer", "consumer", "consumer", "admin"]
    for _, kwargs in made:
        assert_secured(kwargs)


def test_no_module_builds_kafka_clients_around_the_settings() -> None:
    """Every aiokafka client is built in kafka.py / topics.py from ``client_kwargs`` — no side doors."""
    pattern = re.compile(r"AIOKafka(Producer|Consumer|AdminClient)\(")
    offenders = [
        f"{p.relative_to(SRC)}:{n}"
        for p in sorted(SRC.rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), start=1)
        if pattern.search(line) and p.relative_to(SRC).as_posix() not in ("io/kafka.py", "io/topics.py")
    ]
    assert offenders == []
    assert "AIOKafkaAdminClient(**client_kwargs(kafka))" in (SRC / "io" / "topics.py").read_text()


def test_faust_worker_clients_get_the_credentials(tmp_path: Path) -> None:
    """The recommender worker's Faust consumers/producers/changelogs are built from ``broker_credentials``."""
    from streamrec.worker.app import create_app

    settings = SASL.replace(data_dir=str(tmp_path), ssl_cafile=certifi_bundle())
    app, _ = create_app(settings, with_query_encoder=False)
    creds = app.conf.broker_credentials
    assert (creds.username, creds.password, creds.mechanism.value) == (USER, PASSWORD, "SCRAM-SHA-512")
    auth = credentials_to_aiokafka_auth(creds)  # what Faust's aiokafka driver hands every client it creates
    assert auth["security_protocol"] == "SASL_SSL"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == (USER, PASSWORD)
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    assert PASSWORD not in repr(creds)


def test_ssl_only_and_plaintext() -> None:
    from streamrec.worker.app import faust_credentials

    tls = Settings.of(security_protocol="SSL", ssl_cafile=certifi_bundle())
    kw = kafka.client_kwargs(tls.kafka)
    assert kw["security_protocol"] == "SSL" and isinstance(kw["ssl_context"], ssl.SSLContext)
    assert "sasl_plain_password" not in kw
    assert credentials_to_aiokafka_auth(faust_credentials(tls))["security_protocol"] == "SSL"
    assert faust_credentials(Settings()) is None
    assert kafka.client_kwargs(Settings().kafka) == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_security_settings_from_environment() -> None:
    env = {
        "STREAMREC_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMREC_SASL_MECHANISM": "SCRAM-SHA-256",
        "STREAMREC_SASL_USERNAME": USER,
        "STREAMREC_SASL_PASSWORD": PASSWORD,
        "STREAMREC_MAX_MESSAGE_BYTES": "128",
    }
    s = Settings.from_env(env)
    assert (s.kafka.security_protocol, s.kafka.sasl_mechanism, s.kafka.sasl_username, s.kafka.sasl_password) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-256",
        USER,
        PASSWORD,
    )
    assert s.kafka.max_message_bytes == 128


def test_password_never_in_reprs_or_logs(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from streamrec.worker.app import create_app

    caplog.set_level(logging.DEBUG)
    settings = SASL.replace(data_dir=str(tmp_path), ssl_cafile=certifi_bundle())
    logging.getLogger("streamrec.test").info("settings: %s %r", settings, settings)
    create_app(settings, with_query_encoder=False)
    asyncio.run(_start_and_fail(settings))
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert "settings:" in caplog.text
    assert PASSWORD not in caplog.text


async def _start_and_fail(settings: Settings) -> None:
    """A real aiokafka producer with these credentials against a port where nothing listens: it logs, fails."""
    producer = kafka.make_producer(
        settings.kafka, request_timeout_ms=1000, retry_backoff_ms=50, metadata_max_age_ms=1000
    )
    with pytest.raises(Exception):  # noqa: B017 - aiokafka's connection error type varies by version
        await asyncio.wait_for(producer.start(), 5)
    await producer.stop()


def test_payload_limit_configurable_and_enforced() -> None:
    limit = Settings.from_env({"STREAMREC_MAX_MESSAGE_BYTES": "200"}).kafka.max_message_bytes
    ok = orjson.dumps({"user_id": "u", "item_id": "i", "type": "view", "ts": 1, "session_id": "s" * 100})
    assert len(ok) <= limit
    assert parse_event(ok, limit).session_id == "s" * 100
    big = orjson.dumps({"user_id": "u", "item_id": "i", "type": "view", "ts": 1, "session_id": "s" * 200})
    with pytest.raises(InvalidMessage, match=f"payload of {len(big)} bytes exceeds the limit of 200 bytes"):
        parse_event(big, limit)
    with pytest.raises(ValueError, match="max_message_bytes must be > 0"):
        Settings.of(max_message_bytes=0)
