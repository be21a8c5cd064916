"""Ops commands through Typer's CliRunner, against a real store and the emulator on loopback."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from metriport_flows.cli import ops as ops_cli
from metriport_flows.client.signing import compact_json
from metriport_flows.domain.stages import ConsolidatedReady, Outcome, Stage
from metriport_flows.store import MessageStatus, Store, utcnow
from metriport_flows.webhook.operations import BadDuration, parse_duration
from metriport_flows.webhook.reconciler import HEARTBEAT
from tests.fixtures.inbox import conversion_message
from tests.fixtures.sandbox import FACILITY

NOBODY = {
    "firstName": "Zed",
    "lastName": "Nobody",
    "dob": "1980-01-01",
    "genderAtBirth": "M",
    "address": [FACILITY["address"]],
}

OWNER = "dispatcher-test"


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    ops_cli.register(app)
    return app


def invoke(cli: typer.Typer, store: Store, *args: str, **env: str):
    environment = {"DATABASE_URL": store.url, "METRIPORT_BASE_URL": "http://127.0.0.1:9", **env}
    return CliRunner().invoke(cli, list(args), env=environment)


def stored(store: Store, *, days_old: float = 0, status: MessageStatus | None = None) -> str:
    message = conversion_message(f"pat-{uuid.uuid4().hex[:6]}")
    message_id = message["meta"]["messageId"]
    assert store.insert_message(
        message_id=message_id,
        type=message["meta"]["type"],
        body=compact_json(message),
        received_at=utcnow() - timedelta(days=days_old),
    )
    if status is not None:
        others = [
            row.message_id for row in store.claim_pending(limit=1000, owner=OWNER) if row.message_id != message_id
        ]
        assert store.finish_message(message_id, owner=OWNER, status=status)
        store.release_claims(others, owner=OWNER)
    return message_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        (" 7D ", timedelta(days=7)),
        ("0d", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "-5d", "3x", "1.5h", "30 d", "d30", "30dd", "1y"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(BadDuration, match="is not a duration"):
        parse_duration(text)


def test_status_json_shape(cli, store: Store, emulator) -> None:
    api = httpx.Client(base_url=emulator.base_url, headers={"x-api-key": emulator.api_key})
    facility = api.post("/medical/v1/facility", json=FACILITY).raise_for_status().json()
    patient = api.post("/medical/v1/patient", params={"facilityId": facility["id"]}, json=NOBODY).raise_for_status()
    # no webhook URL is set: the download message's delivery fails, and Metriport reports it
    api.post("/medical/v1/document/query", params={"patientId": patient.json()["id"]}).raise_for_status()
    emulator.idle()
    now = utcnow()
    late = store.register_wait(
        flow_run_id=str(uuid.uuid4()),
        stage=Stage.documents,
        attempt=1,
        patient_id="p1",
        soft_deadline=now - timedelta(minutes=1),
        hard_deadline=now + timedelta(hours=1),
        request_id="req-1",
    )
    done = store.register_wait(
        flow_run_id=str(uuid.uuid4()),
        stage=Stage.consolidated,
        attempt=2,
        patient_id="p2",
        soft_deadline=now,
        hard_deadline=now,
    )
    assert store.resolve_wait(done.id, ConsolidatedReady(outcome=Outcome.timeout))
    stored(store, days_old=2)
    stored(store, status=MessageStatus.done)
    store.record_heartbeat(HEARTBEAT, {"resolved_ready": 3, "errors": 0})

    result = invoke(
        cli, store, "status", "--json", METRIPORT_BASE_URL=emulator.base_url, METRIPORT_API_KEY=emulator.api_key
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"generated_at", "open_waits", "backlog", "webhooks", "last_reconcile"}
    [wait] = report["open_waits"]
    assert (wait["wait_id"], wait["flow_run_id"], wait["stage"], wait["attempt"], wait["request_id"]) == (
        late.id,
        late.flow_run_id,
        "documents",
        1,
        "req-1",
    )
    assert wait["past_soft_deadline"] is True and wait["age_seconds"] >= 0
    backlog = {row["status"]: row for row in report["backlog"]}
    assert {status: row["count"] for status, row in backlog.items()} == {"done": 1, "pending": 1}
    assert backlog["pending"]["oldest_age_seconds"] >= 2 * 86400
    assert report["webhooks"] == {"enabled": False, "processing": 0, "failed": 1, "error": None}
    assert report["last_reconcile"]["report"] == {"resolved_ready": 3, "errors": 0}

    table = invoke(cli, store, "status", "--no-ask-metriport", COLUMNS="200")
    assert table.exit_code == 0, table.output
    assert late.flow_run_id in table.output and "Open waits (1)" in table.output
    assert "resolved_ready=3" in table.output and "not asked" in table.output


def test_status_reports_an_unreachable_metriport(cli, store: Store) -> None:
    result = invoke(cli, store, "status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["webhooks"]["error"].startswith("could not ask Metriport")
    assert (report["open_waits"], report["backlog"], report["last_reconcile"]) == ([], [], None)


def test_replay_requeues_a_stored_message(cli, store: Store) -> None:
    message_id = stored(store, status=MessageStatus.done)
    result = invoke(cli, store, "replay", message_id)
    assert result.exit_code == 0, result.output
    assert "queued" in result.output
    row = store.get_message(message_id)
    assert row.status == MessageStatus.pending and row.finished_at is None
    assert [r.message_id for r in store.claim_pending(owner=OWNER)] == [message_id]


def test_replay_unknown_message_fails(cli, store: Store) -> None:
    result = invoke(cli, store, "replay", "no-such-message")
    assert result.exit_code == 1
    assert "No stored message no-such-message" in result.output


def test_purge_drops_old_finished_bodies_only(cli, store: Store) -> None:
    old_done = stored(store, days_old=40, status=MessageStatus.done)
    old_pending = stored(store, days_old=40)
    recent_done = stored(store, days_old=1, status=MessageStatus.done)
    result = invoke(cli, store, "purge", "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert "Purged the bodies of 1 message(s)" in result.output
    assert store.get_message(old_done).body is None
    assert store.get_message(old_done).status == MessageStatus.done, "the row stays as the dedup record"
    assert store.get_message(old_pending).body is not None and store.get_message(recent_done).body is not None
    assert "Purged the bodies of 1 message(s)" in invoke(cli, store, "purge", "--older-than", "12h").output


@pytest.mark.parametrize("bad", ["30", "thirty days", "-1d", "1.5h"])
def test_purge_rejects_bad_durations(cli, store: Store, bad: str, tmp_path: Path) -> None:
    kept = stored(store, days_old=40, status=MessageStatus.done)
    result = invoke(cli, store, "purge", "--older-than", bad)
    assert result.exit_code == 2
    assert "is not a duration" in result.output and "30d" in result.output
    assert store.get_message(kept).body is not None
