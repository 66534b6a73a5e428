"""``streamrec eval`` and ``replay`` on logs: the ingest summary, skip reasons and exit codes (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from streamrec.cli import EXIT_UNUSABLE_LOG, cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ecommerce_events.csv"
FIXTURE_COLUMNS = (
    "user=user_id,item=product_id,type=event_type,ts=event_time,"
    "category=category_code,brand=brand,price=price,session=user_session"
)
FIXTURE_TYPES = "view=view,cart=add_to_cart,purchase=purchase,remove_from_cart=drop"
FIXTURE_SUMMARY = "689 rows read, 652 used, 2 skipped (bad), 35 dropped (--types): remove_from_cart 35"
FAST = ("--systems", "popularity", "--jobs", "1")
"""Evaluate one cheap system: these tests are about reading the log."""


def _invoke(*args: str) -> Result:
    # an unreachable broker: replay must fail before it connects whenever the log is refused
    return CliRunner().invoke(cli, ["--broker", "127.0.0.1:1", *args], catch_exceptions=False)


def _log(tmp_path: Path, good: int, bad: int) -> Path:
    """A headerless log: ``good`` valid rows, then ``bad`` rows with an unreadable timestamp."""
    f = tmp_path / "log.csv"
    rows = [f"u{i % 7},i{i % 11},view,{1_700_000_000 + i}" for i in range(good)]
    rows += [f"u1,i1,view,soon-{i}" for i in range(bad)]
    f.write_text("\n".join(rows) + "\n")
    return f


def _eval(f: Path, *extra: str) -> Result:
    return _invoke("eval", str(f), "--format", "csv", "--no-header", "--columns", "user=0,item=1,type=2,ts=3",
                   "--types", "view=view", *FAST, *extra)  # fmt: skip


@pytest.mark.slow
def test_eval_ingests_the_ecommerce_fixture_with_only_columns_and_types(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = _invoke("eval", str(FIXTURE), "--format", "csv", "--columns", FIXTURE_COLUMNS, "--types", FIXTURE_TYPES,
                     "--systems", "streamrec,popularity", "--jobs", "1", "--json", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[:4] == [
        FIXTURE_SUMMARY,
        "first reasons for skipping (2 of 2):",
        "  line 231: expected at least 9 fields, got 5: ['2019-10-03 00:00:55 UTC', 'view', '43524883', "
        "'2053013563810775923', 'appliances.kitchen.kettle']",
        "  line 461: field 'user_id' must have 1..256 characters",
    ]
    assert "652 events," in result.stdout
    report = orjson.loads(out.read_bytes())
    assert report["events"] == 652
    assert report["systems"]["streamrec"]["recall"] > report["systems"]["popularity"]["recall"] > 0


def test_eval_of_the_reported_log_is_loud_and_fails() -> None:
    # the issue: `... UTC` timestamps read as unix numbers skipped every row, and eval printed zeros and exit 0
    result = _invoke("eval", str(FIXTURE), "--format", "csv", "--columns", FIXTURE_COLUMNS, "--types", FIXTURE_TYPES,
                     "--ts-format", "unix", *FAST)  # fmt: skip
    assert result.exit_code == EXIT_UNUSABLE_LOG
    assert result.stdout == ""  # no table of zeros
    lines = result.stderr.splitlines()
    assert lines[0] == "689 rows read, 0 used, 654 skipped (bad), 35 dropped (--types): remove_from_cart 35"
    assert lines[2] == "  line 2: timestamp '2019-10-01 01:12:25 UTC' is not a number"
    assert lines[-1] == "error: no row of the log could be used; nothing was evaluated"


@pytest.mark.parametrize(
    ("good", "bad", "extra", "code"),
    [
        (99, 1, (), 0),  # 1% bad: exactly the default limit
        (98, 2, (), EXIT_UNUSABLE_LOG),  # 2%: above it
        (98, 2, ("--max-skipped", "2%"), 0),
        (98, 2, ("--max-skipped", "0.02"), 0),
        (97, 3, ("--max-skipped", "0.02"), EXIT_UNUSABLE_LOG),
        (10, 0, ("--max-skipped", "0"), 0),
    ],
)
def test_eval_max_skipped_and_exit_codes(
    tmp_path: Path, good: int, bad: int, extra: tuple[str, ...], code: int
) -> None:
    result = _eval(_log(tmp_path, good, bad), *extra)
    assert result.exit_code == code, result.output
    assert result.stderr.splitlines()[0] == (
        f"{good + bad} rows read, {good} used, {bad} skipped (bad), 0 dropped (--types)"
    )
    if code:
        assert "more than --max-skipped" in result.stderr and result.stdout == ""
    else:
        assert f"{good} events," in result.stdout


def test_max_skipped_rejects_what_is_not_a_share(tmp_path: Path) -> None:
    for value in ("150%", "-0.1", "lots"):
        result = _eval(_log(tmp_path, 5, 0), "--max-skipped", value)
        assert result.exit_code == 2 and "--max-skipped" in result.output


def test_replay_refuses_a_bad_log_before_publishing(tmp_path: Path) -> None:
    f = _log(tmp_path, 98, 2)
    result = _invoke("replay", str(f), "--format", "csv", "--no-header", "--columns", "user=0,item=1,type=2,ts=3",
                     "--types", "view=view")  # fmt: skip
    assert result.exit_code == EXIT_UNUSABLE_LOG
    assert result.stderr.splitlines() == [
        "100 rows read, 98 used, 2 skipped (bad), 0 dropped (--types)",
        "first reasons for skipping (2 of 2):",
        "  line 99: timestamp 'soon-0' is neither ISO 8601 nor a unix number",
        "  line 100: timestamp 'soon-1' is neither ISO 8601 nor a unix number",
        "error: 2.00% of the rows were skipped as bad, more than --max-skipped 1.00%; nothing was published",
    ]


def test_replay_and_eval_name_a_column_missing_from_the_header() -> None:
    for command in ("replay", "eval"):
        result = _invoke(command, str(FIXTURE), "--format", "csv", "--columns", FIXTURE_COLUMNS + ",title=name",
                         "--types", FIXTURE_TYPES)  # fmt: skip
        assert result.exit_code == EXIT_UNUSABLE_LOG
        assert f"error: cannot read {FIXTURE}: column 'name' is not in the header" in result.stderr


def test_an_empty_log_is_unusable(tmp_path: Path) -> None:
    f = tmp_path / "empty.jsonl"
    f.write_text("\n")
    result = _invoke("eval", str(f), "--format", "jsonl", *FAST)
    assert result.exit_code == EXIT_UNUSABLE_LOG
    assert result.stderr.splitlines() == [
        "0 rows read, 0 used, 0 skipped (bad), 0 dropped (--types)",
        "error: the log has no rows; nothing was evaluated",
    ]
