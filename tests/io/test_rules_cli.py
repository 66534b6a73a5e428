"""``streamrec rules set|list|clear``: options become a rule the workers' validator accepts, or a usage error."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from streamrec.cli import cli
from streamrec.io import rules as rules_io
from streamrec.io.rules import RulesInForce
from streamrec.model.rules import Rule, rule_from_dict


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Rule | None]]:
    out: list[tuple[str, Rule | None]] = []

    async def publish_rule(kafka: Any, name: str, rule: Rule | None) -> None:
        out.append((name, rule))

    async def read_rules(kafka: Any) -> RulesInForce:
        return RulesInForce(
            {"a": rule_from_dict("a", {"cap": {"per_brand": 1}})}, {"b": "'cap.per_brand' must be an integer >= 1"}
        )

    monkeypatch.setattr(rules_io, "publish_rule", publish_rule)
    monkeypatch.setattr(rules_io, "read_rules", read_rules)
    return out


def test_set_builds_the_rule_from_options(sent: list[tuple[str, Rule | None]]) -> None:
    args = ["rules", "set", "spring", "--exclude-brand", "acme", "--exclude-category", "coats"]
    args += ["--boost-category", "sandals=1.5", "--boost-brand", "old=0.5", "--max-per-brand", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    [(name, rule)] = sent
    assert name == "spring" and rule is not None
    assert (rule.exclude_brands, rule.exclude_categories) == (frozenset({"acme"}), frozenset({"coats"}))
    assert (dict(rule.boost_categories), dict(rule.boost_brands), rule.max_per_brand) == (
        {"sandals": 1.5},
        {"old": 0.5},
        2,
    )
    assert rule.ts is not None and "rule 'spring' set on rules" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rules", "set", "empty"], "a rule needs at least one of"),
        (["rules", "set", "x", "--boost-brand", "acme"], "--boost-brand expects NAME=MULTIPLIER"),
        (["rules", "set", "x", "--boost-brand", "acme=-1"], "must be a multiplier"),
        (["rules", "set", "x", "--max-per-category", "0"], "'cap.per_category' must be an integer >= 1"),
        (["rules", "set", "x", "--json", "[1]"], "--json must be a JSON object"),
        (["rules", "clear"], "give rule names or --all"),
    ],
)
def test_invalid_rules_are_usage_errors_and_nothing_is_sent(
    sent: list[tuple[str, Rule | None]], args: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output
    assert sent == []


def test_set_from_json_list_and_clear(sent: list[tuple[str, Rule | None]]) -> None:
    result = CliRunner().invoke(cli, ["rules", "set", "j", "--json", '{"exclude": {"item_ids": ["sku-1"]}, "ts": 3}'])
    assert result.exit_code == 0 and sent == [("j", rule_from_dict("j", {"exclude": {"item_ids": ["sku-1"]}, "ts": 3}))]
    listed = CliRunner().invoke(cli, ["rules", "list"])
    assert listed.exit_code == 0
    assert (
        'a                        {"cap":{"per_brand":1}}' in listed.output
        and "b                        newest value invalid" in listed.output
    )
    cleared = CliRunner().invoke(cli, ["rules", "clear", "--all"])
    assert cleared.exit_code == 0 and "cleared 2 rule(s): a, b" in cleared.output
    assert sent[1:] == [("a", None), ("b", None)]
