"""A big consolidated bundle through the product's own path, against a raw download of the same URL.

Run: .venv/bin/python bench/bench_bundle_path.py [MEGABYTES] [OTHER_MESSAGES]   (default 1000 and 20)

On a local stack (Prefect server, emulator, receiver with its dispatcher; no served deployments) one
seed patient's consolidated bundle is made MEGABYTES large (the emulator streams it in constant memory).
A consolidated wait is registered, the query started with the wait's correlation metadata, and the
receiver's dispatcher downloads the bundle to bundle storage as it would for a run; meanwhile the
emulator sends OTHER_MESSAGES patient.admit notifications, which the same dispatcher must handle. Then the
same URL (still valid: 3 minutes) is streamed to disk with plain httpx. Printed side by side:
throughput of each and their ratio (goal: dispatcher >= 0.8x raw), the dispatcher process's peak RSS
growth (VmHWM; goal <= 64 MB), the sha256 against what the emulator served, and how long the other
messages waited (received -> handled) while the download ran.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar, cast

import httpx

from metriport_devtools.demo import DEMO_FACILITY
from metriport_devtools.stack import LocalStack
from metriport_flows.client.messages import CONSOLIDATED_DATA, PATIENT_ADMIT, parse_message
from metriport_flows.domain.stages import ConsolidatedReady, Stage
from metriport_flows.store import InboxMessage, MessageStatus, Store

T = TypeVar("T")

PATIENT = {
    "firstName": "Jane",
    "lastName": "Bench",
    "dob": "1996-02-10",
    "genderAtBirth": "F",
    "address": [{"addressLine1": "1 Main St", "city": "Phoenix", "state": "AZ", "zip": "85300", "country": "USA"}],
}


def peak_rss_mib(pid: int) -> float:
    """The process's high-water resident set (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def until(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise TimeoutError(what)


def raw_download(url: str, dest: Path) -> tuple[int, str, float]:
    digest, size = hashlib.sha256(), 0
    started = time.perf_counter()
    with httpx.stream("GET", url, headers={"accept-encoding": "identity"}, timeout=120) as response:
        response.raise_for_status()
        with dest.open("wb") as file:
            for chunk in response.iter_raw(1 << 20):
                digest.update(chunk)
                file.write(chunk)
                size += len(chunk)
    return size, digest.hexdigest(), time.perf_counter() - started


def main(megabytes: int, others: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bench-bundle-") as folder,
        LocalStack(Path(folder) / "stack", serve=False, delay=(0.0, 0.0), mode="sandbox") as stack,
    ):
        headers = {"x-api-key": stack.api_key}
        api = httpx.Client(base_url=f"{stack.emulator_url}/medical/v1", headers=headers, timeout=30)
        control = httpx.Client(base_url=f"{stack.emulator_url}/_sandbox", timeout=30)
        facility = api.post("/facility", json=DEMO_FACILITY).raise_for_status().json()["id"]
        patient = api.post("/patient", params={"facilityId": facility}, json=PATIENT).raise_for_status().json()["id"]
        api.post("/document/query", params={"patientId": patient, "facilityId": facility}).raise_for_status()
        until(
            lambda: (
                api.get("/document/query", params={"patientId": patient}).json().get("convert", {}).get("status")
                == "completed"
            ),
            60,
            "the document query",
        )
        control.post(f"/patients/{patient}/bundle-size", json={"bytes": megabytes * 1_000_000}).raise_for_status()

        store = Store(stack.database_url)
        now = datetime.now(UTC)
        run_id = str(uuid.uuid4())
        wait = store.register_wait(
            flow_run_id=run_id,
            stage=Stage.consolidated,
            attempt=1,
            patient_id=patient,
            soft_deadline=now + timedelta(hours=1),
            hard_deadline=now + timedelta(hours=2),
        )
        dispatcher_pid = stack.pids()["receiver"]
        rss_before = peak_rss_mib(dispatcher_pid)

        started = time.perf_counter()
        query = api.post(
            f"/patient/{patient}/consolidated/query",
            params={"conversionType": "json"},
            json={"metadata": {"flowRunId": run_id, "stage": Stage.consolidated.value}},
        ).raise_for_status()
        store.set_wait_request_id(wait.id, query.json()["requestId"])
        row = until(lambda: _consolidated_row(store), 60, "the consolidated message")
        for _ in range(others):
            control.post("/notifications", json={"patientId": patient, "type": PATIENT_ADMIT}).raise_for_status()
            time.sleep(0.05)
        result = until(lambda: _wait_result(store, wait.id), 600, "the bundle download", every=0.05)
        resolved = cast(ConsolidatedReady, result)
        dispatcher_seconds = time.perf_counter() - started
        rss_after = peak_rss_mib(dispatcher_pid)
        served = [d for d in control.get("/downloads").json() if d.get("request_id") == query.json()["requestId"]]

        url = getattr(parse_message(row.body or "{}"), "json_url", None)
        if not url:
            raise RuntimeError("the consolidated message has no JSON URL")
        size, raw_sha, raw_seconds = raw_download(url, Path(folder) / "raw.json")

        handled = [m for m in store.list_messages(limit=10_000) if m.type == PATIENT_ADMIT]
        waited = [
            (m.finished_at - m.received_at).total_seconds()
            for m in handled
            if m.status == MessageStatus.done.value and m.finished_at
        ]
        ours_mb_s = (resolved.size_bytes or 0) / 1e6 / dispatcher_seconds
        raw_mb_s = size / 1e6 / raw_seconds
        print(f"bundle: {resolved.size_bytes or 0:,} bytes, outcome {resolved.outcome.value}")
        print(f"{'path':<44}{'seconds':>9}{'MB/s':>9}")
        print(f"{'dispatcher (query -> wait resolved)':<44}{dispatcher_seconds:>9.2f}{ours_mb_s:>9.0f}")
        print(f"{'raw httpx stream to disk, same URL':<44}{raw_seconds:>9.2f}{raw_mb_s:>9.0f}")
        print(f"ratio dispatcher / raw: {ours_mb_s / raw_mb_s:.2f}  (goal >= 0.8)")
        print(f"dispatcher peak RSS growth: {rss_after - rss_before:.1f} MiB  (goal <= 64; {rss_after:.0f} MiB peak)")
        sha_ok = bool(served) and served[-1]["sha256"] == resolved.sha256 == raw_sha
        print(f"sha256 equal to what the emulator served: {sha_ok}")
        if waited:
            print(
                f"other messages: {len(waited)}/{others} handled; received -> handled median "
                f"{statistics.median(waited):.2f} s, max {max(waited):.2f} s"
            )
        else:
            print(f"other messages: 0/{others} handled")


def _consolidated_row(store: Store) -> InboxMessage | None:
    rows = [m for m in store.list_messages(limit=10_000) if m.type == CONSOLIDATED_DATA]
    return rows[0] if rows else None


def _wait_result(store: Store, wait_id: str) -> object | None:
    wait = store.get_wait(wait_id)
    return wait.result_model() if wait else None


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 20)
