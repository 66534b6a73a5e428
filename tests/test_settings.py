from __future__ import annotations

import pytest

from streamrec.settings import Settings, SettingsError


def test_env_overrides_and_types() -> None:
    s = Settings.from_env(
        {"STREAMREC_TOP_K": "7", "STREAMREC_LEARN": "false", "STREAMREC_LEARNING_RATE": "0.5", "OTHER": "x"}
    )
    assert (s.top_k, s.learn, s.learning_rate) == (7, False, 0.5)
    assert Settings.from_env({"STREAMREC_TOP_K": "7"}, top_k=3).top_k == 3


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMREC_TOP_K": "many"}, "not a valid int"),
        ({"STREAMREC_DEVICE": "tpu"}, "expected one of"),
        ({"STREAMREC_TOP_K": "0"}, "top_k must be > 0"),
        ({"STREAMREC_CANDIDATE_CACHE_USERS": "0"}, "candidate_cache_users must be > 0"),
        ({"STREAMREC_CANDIDATES_PER_SOURCE": "-1"}, "candidates_per_source must be > 0"),
        ({"STREAMREC_LEARN": "maybe"}, "not a valid bool"),
    ],
)
def test_bad_values_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_security_options_reach_kafka_clients() -> None:
    s = Settings(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256", sasl_username="u", sasl_password="s3cr3t-pw"
    )
    kw = s.kafka_client_kwargs()
    assert kw["security_protocol"] == "SASL_PLAINTEXT"
    assert (kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]) == (
        "SCRAM-SHA-256",
        "u",
        "s3cr3t-pw",
    )
    assert "s3cr3t-pw" not in repr(s)  # the password never shows up in logs


def test_topic_prefix() -> None:
    assert Settings(topic_prefix="shop1.").topic("events") == "shop1.events"
