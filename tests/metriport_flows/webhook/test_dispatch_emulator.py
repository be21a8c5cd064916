"""The whole receiving side against the emulator over real HTTP: the emulator signs and posts its
webhooks to the receiver, the dispatcher correlates them, asks the emulator's API when it must, and
streams the consolidated bundle from the emulator's expiring signed URL. Prefect is a recording gateway
here; tests/metriport_flows/webhook/test_prefect_resume.py covers the real server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, cast

from pydantic import SecretStr
from sqlalchemy import func, insert, select
from sqlmodel import col

from metriport_flows.client.api import MedicalApi
from metriport_flows.client.models import Downloaded
from metriport_flows.client.signing import compact_json
from metriport_flows.domain.stages import ConsolidatedReady, DocumentsReady, Outcome
from metriport_flows.settings import Settings
from metriport_flows.store import InboxMessage, MessageStatus, Store, Wait, WaitStatus, utcnow
from metriport_flows.webhook.dispatcher import Dispatcher
from metriport_flows.webhook.handlers import metriport_router
from metriport_flows.webhook.protocols import Metriport, RunView
from metriport_flows.webhook.receiver import WEBHOOK_PATH, create_app
from metriport_sandbox.config import SandboxConfig
from metriport_sandbox.seed import SEED_PATIENTS
from tests.fixtures.inbox import RecordingGateway, download_message, make_settings, serve
from tests.fixtures.sandbox import FACILITY

NOBODY = {
    "firstName": "Nomen",
    "lastName": "Nescio",
    "dob": "1980-01-01",
    "genderAtBirth": "U",
    "address": [{"addressLine1": "2 Side St", "city": "Phoenix", "state": "AZ", "zip": "85300", "country": "USA"}],
}


class HasRequestId(Protocol):
    @property
    def request_id(self) -> str | None: ...


@dataclass
class Pipeline:
    api: MedicalApi
    store: Store
    settings: Settings
    gateway: RecordingGateway
    facility_id: str
    dispatcher_api: MedicalApi | SlowDocumentDownloads

    def wait(self, patient_id: str, stage: str) -> tuple[str, Wait]:
        run = str(uuid.uuid4())
        wait = self.store.register_wait(
            flow_run_id=run,
            stage=stage,
            attempt=1,
            patient_id=patient_id,
            soft_deadline=utcnow() + timedelta(minutes=10),
            hard_deadline=utcnow() + timedelta(hours=1),
        )
        return run, wait

    async def resolved(self, wait_id: str, timeout: float = 30) -> Wait:
        return await until(lambda: self._resolved(wait_id), timeout)

    def _resolved(self, wait_id: str) -> Wait | None:
        wait = self.store.get_wait(wait_id)
        return wait if wait.status != WaitStatus.open else None


async def until(probe: Callable[[], object], timeout: float) -> object:
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := probe()) is None or value is False:
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
    return value


@dataclass
class SlowDocumentDownloads:
    """Metriport whose document downloads (a bulk download's files, not bundles) take `seconds` each."""

    api: MedicalApi
    seconds: float
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def download(self, url: str, dest: Path, chunk_size: int = 1 << 20) -> Downloaded:
        if "documents" in dest.parts:
            self.started.set()
            await asyncio.sleep(self.seconds)
        return await self.api.download(url, dest, chunk_size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)


@asynccontextmanager
async def pipeline(
    emulator_base_url: str,
    api_key: str,
    store: Store,
    tmp_path: Path,
    slow_documents: float | None = None,
    timeout: float = 30,
    **settings: Any,
) -> AsyncIterator[Pipeline]:
    async with MedicalApi(emulator_base_url, api_key, timeout=timeout) as api:
        key = (await api.update_settings("http://127.0.0.1:9/not-listening")).webhook_key.get_secret_value()
        settings = make_settings(
            tmp_path,
            store,
            metriport_webhook_key=SecretStr(key),
            metriport_base_url=emulator_base_url,
            metriport_api_key=SecretStr(api_key),
            **settings,
        )
        with serve(create_app(settings, store, run_dispatcher=False)) as receiver_url:
            await api.update_settings(receiver_url + WEBHOOK_PATH)
            gateway, stop = RecordingGateway(), asyncio.Event()
            metriport = api if slow_documents is None else SlowDocumentDownloads(api, slow_documents)
            self_api = cast(Metriport, metriport)
            task = asyncio.create_task(Dispatcher(store, settings, gateway, self_api, metriport_router()).run(stop))
            facility = await api.create_facility(FACILITY)
            try:
                yield Pipeline(api, store, settings, gateway, facility.id, metriport)
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)


async def documents_ready(p: Pipeline, patient_id: str) -> DocumentsReady:
    run, wait = p.wait(patient_id, "documents")
    started = await p.api.start_document_query(patient_id, p.facility_id, metadata={"flowRunId": run})
    p.store.set_wait_request_id(wait.id, started.request_id)
    result = (await p.resolved(wait.id)).result_model()
    assert isinstance(result, DocumentsReady) and result.request_id == started.request_id
    return result


async def consolidated(p: Pipeline, patient_id: str, conversion_type: str) -> tuple[ConsolidatedReady, str]:
    run, wait = p.wait(patient_id, "consolidated")
    query = await p.api.start_consolidated_query(
        patient_id, conversion_type, metadata={"flowRunId": run, "stage": "consolidated"}
    )
    p.store.set_wait_request_id(wait.id, query.request_id)
    result = (await p.resolved(wait.id)).result_model()
    assert isinstance(result, ConsolidatedReady) and result.request_id == query.request_id
    return result, query.request_id


async def test_documents_then_consolidated_bundles_streamed_at_once(
    emulator, sqlite_store: Store, tmp_path: Path
) -> None:
    async with pipeline(emulator.base_url, emulator.api_key, sqlite_store, tmp_path) as p:
        jane = await p.api.create_patient(p.facility_id, SEED_PATIENTS["jane"].demographics())
        nobody = await p.api.create_patient(p.facility_id, NOBODY)
        seeded, empty = await asyncio.gather(documents_ready(p, jane.id), documents_ready(p, nobody.id))
        bundles = {kind: await consolidated(p, jane.id, kind) for kind in ("json", "pdf")}
        no_data, _ = await consolidated(p, nobody.id, "json")

    assert seeded.outcome == Outcome.ready
    # whichever of download and conversion comes first, the counts are there
    assert (seeded.documents, seeded.converted) == (7, 1)
    # no conversion message for a patient without documents: the download message plus GET /document/query
    assert (empty.outcome, empty.documents, empty.converted) == (Outcome.ready, 0, 0)
    for kind, (result, request_id) in bundles.items():
        assert result.outcome == Outcome.ready and not result.empty
        path = Path(result.bundle_path)
        assert path == p.settings.bundle_dir / jane.id / f"{request_id}.{kind}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == result.sha256 and len(data) == result.size_bytes
    assert json.loads(Path(bundles["json"][0].bundle_path).read_bytes())["resourceType"] == "Bundle"
    assert Path(bundles["pdf"][0].bundle_path).read_bytes().startswith(b"%PDF")
    assert (no_data.outcome, no_data.empty, no_data.bundle_path) == (Outcome.ready, True, None)
    served = emulator.control.get("/_sandbox/downloads").json()
    assert (200, bundles["json"][0].sha256) in {(d["status"], d["sha256"]) for d in served}


async def test_an_expired_bundle_url_resolves_as_expired(emulator_server, sqlite_store: Store, tmp_path: Path) -> None:
    short_lived = emulator_server(
        SandboxConfig(delay=(0.0, 0.0), retry_pause_max=0.0, url_lifetimes={"consolidated": 0})
    )
    async with pipeline(short_lived.base_url, short_lived.api_key, sqlite_store, tmp_path) as p:
        chris = await p.api.create_patient(p.facility_id, SEED_PATIENTS["chris"].demographics())
        await documents_ready(p, chris.id)
        result, request_id = await consolidated(p, chris.id, "json")
    assert result.outcome == Outcome.expired and result.bundle_path is None
    assert not list((p.settings.bundle_dir / chris.id).glob(f"{request_id}*"))
    assert {d["status"] for d in short_lived.control.get("/_sandbox/downloads").json()} == {403}


def unmatched_backlog(store: Store, rows: int) -> None:
    """`rows` document-download messages for patients no run waits for, all due for another look."""
    now = utcnow()
    values = []
    for n in range(rows):
        message = download_message(f"pat-backlog-{n}")
        values.append(
            dict(
                message_id=message["meta"]["messageId"],
                type=message["meta"]["type"],
                patient_id=f"pat-backlog-{n}",
                body=compact_json(message).decode(),
                received_at=now - timedelta(hours=1),
                status=MessageStatus.unmatched.value,
                attempts=1,
                next_attempt_at=now,
            )
        )
    with store.session() as session:
        session.execute(insert(InboxMessage), values)
        session.commit()


async def handled_within(p: Pipeline, patient_id: str, seconds: float) -> ConsolidatedReady:
    """Start a consolidated query; its message must be handled (bundle stored) within `seconds` of arriving."""
    run, wait = p.wait(patient_id, "consolidated")
    query = await p.api.start_consolidated_query(
        patient_id, "json", metadata={"flowRunId": run, "stage": "consolidated"}
    )
    p.store.set_wait_request_id(wait.id, query.request_id)
    resolved = await p.resolved(wait.id)
    [row] = [m for m in p.store.list_messages(limit=20) if m.request_id == query.request_id]
    took = (resolved.resolved_at - row.received_at).total_seconds()
    assert took < seconds, f"the consolidated message waited {took:.1f} s"
    result = resolved.result_model()
    assert isinstance(result, ConsolidatedReady) and result.outcome == Outcome.ready and result.bundle_path
    assert hashlib.sha256(Path(result.bundle_path).read_bytes()).hexdigest() == result.sha256
    return result


async def test_a_backlog_of_unmatched_retries_never_delays_a_fresh_message(
    emulator, store: Store, tmp_path: Path
) -> None:
    async with pipeline(emulator.base_url, emulator.api_key, store, tmp_path) as p:
        jane = await p.api.create_patient(p.facility_id, SEED_PATIENTS["jane"].demographics())
        await documents_ready(p, jane.id)
        unmatched_backlog(p.store, 10_000)
        await handled_within(p, jane.id, 2.0)
    with store.session() as session:
        kept = session.scalar(
            select(func.count())
            .select_from(InboxMessage)
            .where(col(InboxMessage.patient_id).startswith("pat-backlog-"))
            .where(col(InboxMessage.status) != MessageStatus.done.value)
        )
    assert kept == 10_000, "every backlog row is kept for its wait (released on stop, none lost)"


async def test_a_slow_bulk_download_never_delays_a_consolidated_message(
    emulator, sqlite_store: Store, tmp_path: Path
) -> None:
    async with pipeline(emulator.base_url, emulator.api_key, sqlite_store, tmp_path, slow_documents=8.0) as p:
        jane = await p.api.create_patient(p.facility_id, SEED_PATIENTS["jane"].demographics())
        await documents_ready(p, jane.id)
        run, bulk_wait = p.wait(jane.id, "bulk_download")
        await p.api.start_bulk_download(jane.id, metadata={"flowRunId": run, "stage": "bulk_download"})
        assert isinstance(p.dispatcher_api, SlowDocumentDownloads)
        await asyncio.wait_for(p.dispatcher_api.started.wait(), 30)

        await handled_within(p, jane.id, 2.0)
        assert p.store.get_wait(bulk_wait.id).status == WaitStatus.open, "the bulk download is still under way"
        bulk = (await p.resolved(bulk_wait.id, timeout=120)).result_model()
    assert bulk is not None and bulk.outcome == Outcome.ready


def suspended_runs(p: Pipeline, patient_id: str, stage: str, count: int) -> list[tuple[str, Wait]]:
    """`count` runs of one patient, each suspended on its own wait of `stage`."""
    runs = [p.wait(patient_id, stage) for _ in range(count)]
    for run, wait in runs:
        p.gateway.runs[run] = RunView("PAUSED", "Suspended", wait.pause_key)
    return runs


async def started(
    p: Pipeline, runs: list[tuple[str, Wait]], start: Callable[[str], Awaitable[HasRequestId]]
) -> set[str]:
    """Each run makes its start call in turn (Metriport answers the second with the running query's request
    id) and records the answer on its wait; the request ids recorded."""
    for run, wait in runs:
        request_id = (await start(run)).request_id
        assert request_id, "Metriport answers a start call with a request id"
        p.store.set_wait_request_id(wait.id, request_id)
    return {p.store.get_wait(wait.id).request_id for _, wait in runs}


async def test_two_runs_of_one_patient_sharing_a_document_query_both_end(
    emulator_server, sqlite_store: Store, tmp_path: Path
) -> None:
    slow = emulator_server(SandboxConfig(delay=(1.0, 1.0), retry_pause_max=0.0))  # the first query still runs
    async with pipeline(slow.base_url, slow.api_key, sqlite_store, tmp_path) as p:
        jane = await p.api.create_patient(p.facility_id, SEED_PATIENTS["jane"].demographics())
        runs = suspended_runs(p, jane.id, "documents", 2)
        request_ids = await started(
            p,
            runs,
            lambda run: p.api.start_document_query(jane.id, p.facility_id, metadata={"flowRunId": run}),
        )
        assert len(request_ids) == 1, "the emulator keeps one document query in flight per patient"
        for _, wait in runs:
            result = (await p.resolved(wait.id)).result_model()
            assert isinstance(result, DocumentsReady) and result.outcome == Outcome.ready
            assert result.request_id in request_ids
        await until(lambda: len(p.gateway.resumes) >= 2, 10)
        assert sorted(run for run, _ in p.gateway.resumes) == sorted(run for run, _ in runs)


async def test_two_runs_of_one_patient_sharing_a_consolidated_query_both_get_the_bundle(
    emulator_server, sqlite_store: Store, tmp_path: Path
) -> None:
    slow = emulator_server(SandboxConfig(delay=(1.0, 1.0), retry_pause_max=0.0))  # the first query still runs
    async with pipeline(slow.base_url, slow.api_key, sqlite_store, tmp_path) as p:
        jane = await p.api.create_patient(p.facility_id, SEED_PATIENTS["jane"].demographics())
        await documents_ready(p, jane.id)
        runs = suspended_runs(p, jane.id, "consolidated", 2)
        request_ids = await started(
            p,
            runs,
            lambda run: p.api.start_consolidated_query(
                jane.id, "json", metadata={"flowRunId": run, "stage": "consolidated"}
            ),
        )
        assert len(request_ids) == 1
        results = [(await p.resolved(wait.id)).result_model() for _, wait in runs]
        for result in results:
            assert isinstance(result, ConsolidatedReady) and result.outcome == Outcome.ready and result.bundle_path
            assert hashlib.sha256(Path(result.bundle_path).read_bytes()).hexdigest() == result.sha256
        await until(lambda: len(p.gateway.resumes) >= 2, 10)
        assert sorted(run for run, _ in p.gateway.resumes) == sorted(run for run, _ in runs)
