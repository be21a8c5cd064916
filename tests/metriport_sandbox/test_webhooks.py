"""Webhook transport over real loopback HTTP: signature round trip, ping/pong, bookkeeping, retry,
metadata echo at send time, disableWHFlag, redirects. Uses the uvicorn emulator and a recording receiver."""

from __future__ import annotations

import hashlib
import json
import time

import httpx

from metriport_flows.client.signing import SIGNATURE_HEADER, WebhookSigner, compact_json
from tests.fixtures.sandbox import FACILITY, JANE, person


def api(emulator) -> httpx.Client:
    return httpx.Client(
        base_url=emulator.base_url, headers={"x-api-key": emulator.api_key}, trust_env=False, timeout=30
    )


def make_patient(client: httpx.Client, demographics: dict | None = None) -> str:
    facility_id = client.post("/medical/v1/facility", json=FACILITY).json()["id"]
    return client.post("/medical/v1/patient", params={"facilityId": facility_id}, json=demographics or JANE).json()[
        "id"
    ]


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


def test_ping_signature_round_trip_and_settings(emulator, webhook_receiver):
    with api(emulator) as client:
        fresh = client.get("/settings").json()
        assert list(fresh) == ["id", "webhookUrl", "webhookKey", "mrFilters"] and fresh["webhookKey"] is None
        settings = client.post("/settings", json={"webhookUrl": webhook_receiver.url}).json()
        key = settings["webhookKey"]
        assert len(key) == 21
        ping = webhook_receiver.wait_for(1)[0]
        assert ping.headers["user-agent"] == "Metriport API"
        assert ping.headers["content-type"] == "application/json"
        assert WebhookSigner(key).verify(ping.body, ping.headers[SIGNATURE_HEADER])
        body = ping.json()
        assert list(body) == ["ping", "meta"] and list(body["meta"]) == ["messageId", "when", "type"]
        assert ping.body == compact_json(body)
        status = wait_until(lambda: (s := client.get("/settings/webhook").json())["webhookEnabled"] and s)
        assert status == {
            "webhookEnabled": True,
            "webhookStatusDetail": "OK",
            "webhookRequestsProcessing": 0,
            "webhookRequestsFailed": 0,
        }
        moved = client.post("/settings", json={"webhookUrl": webhook_receiver.url + "?v=2"}).json()
        assert moved["webhookKey"] == key
        strict = client.post("/settings", json={"webhookUrl": webhook_receiver.url, "extra": 1})
        assert strict.status_code == 400 and "Unrecognized key(s)" in strict.json()["detail"]
        assert client.post("/settings", json={"webhookUrl": "not a url"}).status_code == 400


def test_missing_pong_disables_webhook_status(emulator, webhook_receiver):
    webhook_receiver.answer_pong = False
    with api(emulator) as client:
        client.post("/settings", json={"webhookUrl": webhook_receiver.url})
        webhook_receiver.wait_for(1)
        status = wait_until(lambda: (s := client.get("/settings/webhook").json())["webhookStatusDetail"] and s)
        assert status["webhookEnabled"] is False
        assert status["webhookStatusDetail"] == "Bad response from webhook call"


def test_non_ascii_body_is_signed_byte_exact(emulator, webhook_receiver):
    with api(emulator) as client:
        key = client.post("/settings", json={"webhookUrl": webhook_receiver.url}).json()["webhookKey"]
        patient_id = make_patient(client, person("Zoë", "Müller"))
        client.post(
            "/medical/v1/document/query", params={"patientId": patient_id}, json={"metadata": {"note": "café ✓"}}
        )
        emulator.idle()
        message = webhook_receiver.wait_for(1, "medical.document-download")[0]
        assert "café ✓".encode() in message.body
        assert WebhookSigner(key).verify(message.body, message.headers[SIGNATURE_HEADER])
        assert message.body == json.dumps(message.json(), separators=(",", ":"), ensure_ascii=False).encode()
        delivery = emulator.control.get("/_sandbox/deliveries", params={"type": "medical.document-download"}).json()[0]
        assert delivery["sha256"] == hashlib.sha256(message.body).hexdigest() and delivery["kind"] == "first"


def test_failures_are_recorded_and_retry_resends_same_message_without_data(emulator, webhook_receiver):
    with api(emulator) as client:
        client.post("/settings", json={"webhookUrl": webhook_receiver.url})
        webhook_receiver.wait_for(1)
        webhook_receiver.status = 500
        patient_id = make_patient(client)
        client.post(
            "/medical/v1/document/query", params={"patientId": patient_id}, json={"metadata": {"flowRunId": "abc"}}
        )
        emulator.idle()
        status = client.get("/settings/webhook").json()
        assert status["webhookRequestsFailed"] == 2 and status["webhookEnabled"] is False
        assert status["webhookStatusDetail"] == "Request failed with status code 500"
        first = {m.json()["meta"]["messageId"]: m.json() for m in webhook_receiver.messages()[1:]}
        webhook_receiver.status = 200
        assert client.post("/settings/webhook/retry").status_code == 200
        emulator.idle()
        retried = [m.json() for m in webhook_receiver.messages()[3:]]
        assert len(retried) == 2
        for message in retried:
            original = first[message["meta"]["messageId"]]
            assert message["meta"]["when"] == original["meta"]["when"]
            assert "data" in original["meta"] and "data" not in message["meta"]
        assert client.get("/settings/webhook").json()["webhookRequestsFailed"] == 0
        kinds = [d["kind"] for d in emulator.control.get("/_sandbox/deliveries").json()]
        assert kinds.count("retry") == 2
        assert client.post("/settings/webhook/retry").status_code == 200
        emulator.idle()
        assert len(webhook_receiver.messages()) == 5


def test_redirect_counts_as_failure_and_is_not_followed(emulator, webhook_receiver):
    webhook_receiver.redirect = True
    with api(emulator) as client:
        client.post("/settings", json={"webhookUrl": webhook_receiver.url})
        patient_id = make_patient(client, person())
        client.post("/medical/v1/document/query", params={"patientId": patient_id})
        emulator.idle()
        rows = emulator.control.get("/_sandbox/webhook-requests").json()
        assert [(r["status"], r["httpStatus"]) for r in rows] == [("failure", 302)]
        assert len(webhook_receiver.messages()) == 2


def test_metadata_is_read_at_send_time_and_disable_flag_suppresses(emulator, webhook_receiver):
    with api(emulator) as client:
        client.post("/settings", json={"webhookUrl": webhook_receiver.url})
        patient_id = make_patient(client)
        emulator.control.post("/_sandbox/config", json={"delay": [0.3, 0.3]})
        client.post(
            f"/medical/v1/patient/{patient_id}/consolidated/query",
            params={"conversionType": "json"},
            json={"metadata": {"who": "first"}},
        )
        client.post(
            f"/medical/v1/patient/{patient_id}/consolidated/query",
            params={"conversionType": "pdf"},
            json={"metadata": {"who": "second"}},
        )
        emulator.idle()
        data = [m.json()["meta"]["data"] for m in webhook_receiver.messages("medical.consolidated-data")]
        assert data == [{"who": "second"}, {"who": "second"}]
        emulator.control.post("/_sandbox/config", json={"delay": [0, 0]})
        client.post(
            f"/medical/v1/patient/{patient_id}/consolidated/query",
            params={"conversionType": "html"},
            json={"metadata": {"disableWHFlag": "TRUE"}},
        )
        emulator.idle()
        assert len(webhook_receiver.messages("medical.consolidated-data")) == 2
        rows = emulator.control.get("/_sandbox/webhook-requests").json()
        assert rows[-1]["status"] == "success"


def test_missing_webhook_url_records_failure_without_sending(emulator):
    with api(emulator) as client:
        patient_id = make_patient(client, person())
        client.post("/medical/v1/document/query", params={"patientId": patient_id})
        emulator.idle()
        assert client.get("/settings/webhook").json()["webhookRequestsFailed"] == 1
        delivery = emulator.control.get("/_sandbox/deliveries").json()[0]
        assert delivery["sent"] is False and delivery["status"] == "failure"


def test_notifications_admit_and_discharge(emulator, webhook_receiver):
    with api(emulator) as client:
        client.post("/settings", json={"webhookUrl": webhook_receiver.url})
        patient_id = make_patient(client)
        for kind in ("patient.admit", "patient.discharge"):
            sent = emulator.control.post("/_sandbox/notifications", json={"patientId": patient_id, "type": kind})
            assert sent.status_code == 200
        emulator.idle()
        admit = webhook_receiver.wait_for(1, "patient.admit")[0].json()
        discharge = webhook_receiver.wait_for(1, "patient.discharge")[0].json()
        assert list(admit["payload"]) == ["patientId", "url", "whenSourceSent", "admitTimestamp"]
        assert "dischargeTimestamp" in discharge["payload"] and "data" not in discharge["meta"]
        bundle = httpx.get(admit["payload"]["url"], trust_env=False).json()
        assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"Patient", "Encounter"}
        assert "X-Amz-Expires=600" in admit["payload"]["url"]


def test_sample_payload_is_sent_as_is(emulator, webhook_receiver):
    with api(emulator) as client:
        key = client.post("/settings", json={"webhookUrl": webhook_receiver.url}).json()["webhookKey"]
        webhook_receiver.wait_for(1)
        sample = {"meta": {"messageId": "m-1", "when": "2025-01-01T00:00:00.000Z", "type": "medical.custom"}, "x": "ü"}
        answer = client.post("/settings/webhook/sample-payload", json=sample).json()
        assert answer["status"] == "success" and answer["url"] == webhook_receiver.url
        received = webhook_receiver.wait_for(1, "medical.custom")[0]
        assert received.body == compact_json(sample)
        assert WebhookSigner(key).verify(received.body, received.headers[SIGNATURE_HEADER])
        assert client.post("/settings/webhook/sample-payload", json={"x": 1}).status_code == 400
