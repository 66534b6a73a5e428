from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from streamrec.io.kafka import client_kwargs
from streamrec.settings import ENV_PREFIX, FIELD_SECTION, SECTIONS, Settings, SettingsError, env_name


def test_env_overrides_and_types() -> None:
    s = Settings.from_env(
        {"STREAMREC_TOP_K": "7", "STREAMREC_LEARN": "false", "STREAMREC_LEARNING_RATE": "0.5", "OTHER": "x"}
    )
    assert (s.retrieval.top_k, s.ranker.learn, s.ranker.learning_rate) == (7, False, 0.5)
    assert Settings.from_env({"STREAMREC_TOP_K": "7"}, top_k=3).retrieval.top_k == 3


def test_every_field_has_one_flat_environment_name_and_sections_are_frozen() -> None:
    names = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) == len(FIELD_SECTION)
    assert env_name("broker") == "STREAMREC_BROKER" and env_name("batch_size") == "STREAMREC_BATCH_SIZE"
    s = Settings()
    for section in SECTIONS:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(getattr(s, section), next(iter(dataclasses.fields(getattr(s, section)))).name, None)
    # every field reads back from its flat environment name, whatever section holds it
    env = {ENV_PREFIX + name.upper(): str(value) for name, value in Settings().flat().items() if type(value) is int}
    assert Settings.from_env(env) == Settings()
    assert Settings.from_env({"STREAMREC_SNAPSHOT_INTERVAL_S": "2.5"}).batching.snapshot_interval_s == 2.5
    assert Settings.from_env({"STREAMREC_GC_FREEZE_EVENTS": "0"}).batching.gc_freeze_events == 0


def test_replace_routes_flat_names_and_rejects_unknown_ones() -> None:
    s = Settings().replace(top_k=3, broker="b:1", learn=False)
    assert (s.retrieval.top_k, s.kafka.broker, s.ranker.learn) == (3, "b:1", False)
    assert s.retrieval.candidates_per_source == Settings().retrieval.candidates_per_source
    with pytest.raises(SettingsError, match="unknown setting 'topk'"):
        Settings.of(topk=3)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMREC_TOP_K": "many"}, "not a valid int"),
        ({"STREAMREC_DEVICE": "tpu"}, "expected one of"),
        ({"STREAMREC_TOP_K": "0"}, "top_k must be > 0"),
        ({"STREAMREC_CANDIDATE_CACHE_USERS": "0"}, "candidate_cache_users must be > 0"),
        ({"STREAMREC_CANDIDATES_PER_SOURCE": "-1"}, "candidates_per_source must be > 0"),
        ({"STREAMREC_LEARN": "maybe"}, "not a valid bool"),
        ({"STREAMREC_GC_FREEZE_EVENTS": "-1"}, "gc_freeze_events must be >= 0"),
    ],
)
def test_bad_values_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_security_options_reach_kafka_clients() -> None:
    s = Settings.of(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256", sasl_username="u", sasl_password="s3cr3t-pw"
    )
    kw = client_kwargs(s.kafka)
    assert kw["security_protocol"] == "SASL_PLAINTEXT"
    assert (kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]) == (
        "SCRAM-SHA-256",
        "u",
        "s3cr3t-pw",
    )
    assert "s3cr3t-pw" not in repr(s)  # the password never shows up in logs


def test_topic_prefix() -> None:
    assert Settings.of(topic_prefix="shop1.").kafka.topic("events") == "shop1.events"


def test_settings_module_imports_no_framework() -> None:
    """Reading settings must not load torch, faiss or aiokafka (the command line and the model read them)."""
    code = (
        "import sys, streamrec.settings; print(sorted(m for m in ('torch', 'faiss', 'aiokafka') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "[]"
