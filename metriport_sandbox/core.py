"""What every operation family shares: tenants, facilities, patients, webhook settings and sender, signed
URLs, API checks, and the background-task pool that async jobs and webhook sends run in (`idle()` waits
for it, so tests never sleep). No HTTP; errors are `ApiError`.

The operation families (`ops_documents`, `ops_consolidated`, `ops_bulk`) each take a `Core`; `backend.py`
composes them. Nothing here imports a family or the backend.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine
from typing import Any

from metriport_sandbox import signed_urls, validation
from metriport_sandbox.config import SandboxConfig
from metriport_sandbox.errors import ApiError, bad_request, not_found, problem
from metriport_sandbox.faults import FaultScenario
from metriport_sandbox.ids import nanoid, uuid7
from metriport_sandbox.ratelimit import MESSAGES, RateLimiter
from metriport_sandbox.sender import WebhookSender
from metriport_sandbox.state import Facility, Patient, Tenant, WebhookSettings, now_iso

log = logging.getLogger(__name__)

PATIENT_LIMIT_MESSAGE = "Cannot create more than 20 patients in Sandbox mode!"
DQ_IN_PROGRESS = "Document querying currently in progress"
DEFAULT_LIFETIMES = {
    "document": signed_urls.DOWNLOAD_URL,
    "consolidated": signed_urls.CONSOLIDATED,
    "bulk-download": signed_urls.BULK_DOWNLOAD,
    "bulk-upload": signed_urls.BULK_UPLOAD,
    "bulk-result": signed_urls.BULK_RESULT,
    "notification": signed_urls.NOTIFICATION,
    "medical-record": signed_urls.MEDICAL_RECORD,
}


class Core:
    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.faults = FaultScenario.parse(self.config.faults, self.config.seed)
        self.limiter = RateLimiter(self.config.rate_limits, self.config.rate_limit_window)
        self.signer = signed_urls.UrlSigner(self.config.url_secret.encode())
        self.sender = WebhookSender(self)
        self.tenants: dict[str, Tenant] = {}
        self.downloads: list[dict[str, Any]] = []
        self._api_calls: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._pings_due = 0
        # A test control, not Metriport: document queries started while held finish only once released,
        # so a test can make several start calls land on one running query whatever the machine's load.
        self.document_queries_released = asyncio.Event()
        self.document_queries_released.set()

    # -- lifecycle -------------------------------------------------------------------------------
    def reset(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self.tenants.clear()
        self.downloads.clear()
        self._api_calls.clear()
        self._pings_due = 0
        self.sender.reset()
        self.limiter.reset()

    def set_faults(self, scenario: FaultScenario) -> None:
        scenario.seed = self.config.seed
        self.faults = scenario

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """Run background work (job progression, webhook sends); errors are logged, never raised."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sandbox background task failed", exc_info=task.exception())

    async def idle(self, timeout: float = 60.0) -> bool:
        """Wait until no background job or delivery is pending; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks or self._pings_due:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=remaining)
            else:
                await asyncio.sleep(min(0.01, remaining))
        return True

    @property
    def pending(self) -> int:
        return len(self._tasks) + self._pings_due

    def delay(self, tenant: Tenant) -> float:
        low, high = self.config.delay
        return tenant.rng.uniform(low, high) if high > 0 else 0.0

    def lifetime(self, kind: str) -> int:
        if self.faults.url_lifetime is not None:
            return self.faults.url_lifetime
        return self.config.url_lifetimes.get(kind, DEFAULT_LIFETIMES[kind])

    def sign_url(self, path: str, kind: str) -> str:
        expired = kind == "consolidated" and self.faults.chance(self.faults.url_expired, "url_expired", path)
        return self.config.public_url.rstrip("/") + self.signer.sign(path, 0 if expired else self.lifetime(kind))

    # -- tenants and API checks ------------------------------------------------------------------
    def tenant(self, tenant_id: str) -> Tenant:
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            rng = random.Random(f"{self.config.seed}:{tenant_id}")
            tenant = Tenant(id=tenant_id, rng=rng, settings=WebhookSettings(id=uuid7(rng)))
            self.tenants[tenant_id] = tenant
        return tenant

    def api_calls(self, tenant_id: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (tenant, operation), count in self._api_calls.items():
            if tenant_id is None or tenant == tenant_id:
                counts[operation] = counts.get(operation, 0) + count
        return counts

    def check_api(self, tenant_id: str, operation: str) -> dict[str, str]:
        """Injected API faults first, then the rate limiter; returns the RateLimit headers."""
        key = (tenant_id, operation)
        self._api_calls[key] = self._api_calls.get(key, 0) + 1
        fault = self.faults.api_fault(operation, tenant_id, self._api_calls[key])
        if fault == 429:
            message = MESSAGES.get(operation, "Too many requests, please try again later.")
            raise ApiError(429, message, "text/plain", {"Retry-After": "1"})
        if fault == 500:
            raise problem(500, "InternalServerError", "Please try again or reach out to support@metriport.com")
        if operation in self.limiter.limits:
            return self.limiter.hit(tenant_id, operation)
        return {}

    def find_patient(self, patient_id: str) -> tuple[Tenant, Patient] | None:
        for tenant in self.tenants.values():
            if patient_id in tenant.patients:
                return tenant, tenant.patients[patient_id]
        return None

    # -- facilities ------------------------------------------------------------------------------
    def create_facility(self, tenant_id: str, body: Any) -> Facility:
        tenant = self.tenant(tenant_id)
        data = validation.facility(body)
        tenant.facility_seq += 1
        facility = Facility(
            id=uuid7(tenant.rng),
            oid=f"2.16.840.1.113883.3.9621.5.{tenant.rng.randrange(100, 999)}.2.{tenant.facility_seq}",
            **data,
        )
        tenant.facilities[facility.id] = facility
        return facility

    def get_facility(self, tenant_id: str, facility_id: str) -> Facility:
        facility = self.tenant(tenant_id).facilities.get(facility_id)
        if facility is None:
            raise not_found("Could not find facility")
        return facility

    def list_facilities(self, tenant_id: str) -> list[Facility]:
        return list(self.tenant(tenant_id).facilities.values())

    def update_facility(self, tenant_id: str, facility_id: str, body: Any) -> Facility:
        facility = self.get_facility(tenant_id, facility_id)
        data = validation.facility(body)
        for key, value in data.items():
            setattr(facility, key, value)
        facility.version += 1
        return facility

    def delete_facility(self, tenant_id: str, facility_id: str) -> None:
        tenant = self.tenant(tenant_id)
        self.get_facility(tenant_id, facility_id)
        if any(facility_id in p.facility_ids for p in tenant.patients.values()):
            raise bad_request("Cannot delete facility with patients")
        del tenant.facilities[facility_id]

    # -- patients --------------------------------------------------------------------------------
    @staticmethod
    def _same_person(patient: Patient, demo: dict) -> bool:
        mine = patient.demographics
        return (
            mine["firstName"].lower() == demo["firstName"].lower()
            and mine["lastName"].lower() == demo["lastName"].lower()
            and mine["dob"] == demo["dob"]
            and mine["genderAtBirth"] == demo["genderAtBirth"]
        )

    def create_patient(self, tenant_id: str, facility_id: str | None, body: Any) -> Patient:
        tenant = self.tenant(tenant_id)
        if not facility_id:
            raise bad_request("Missing facilityId query param")
        if self.config.mode == "sandbox" and len(tenant.patients) >= self.config.patient_limit:
            raise ApiError(400, {"message": PATIENT_LIMIT_MESSAGE})
        demo = validation.demographics(body)
        self.get_facility(tenant_id, facility_id)
        for patient in tenant.patients.values():
            if self._same_person(patient, demo):
                return patient
        tenant.patient_seq += 1
        patient = Patient(
            id=uuid7(tenant.rng),
            ordinal=tenant.patient_seq,
            facility_ids=[facility_id],
            demographics=demo,
            external_id=(body or {}).get("externalId"),
            additional_ids=(body or {}).get("additionalIds"),
            date_created=now_iso(),
        )
        tenant.patients[patient.id] = patient
        return patient

    def get_patient(self, tenant_id: str, patient_id: str) -> Patient:
        patient = self.tenant(tenant_id).patients.get(patient_id)
        if patient is None:
            raise not_found("Could not find patient")
        return patient

    def list_patients(self, tenant_id: str, facility_id: str | None = None) -> list[Patient]:
        patients = sorted(self.tenant(tenant_id).patients.values(), key=lambda p: p.id)
        return [p for p in patients if not facility_id or facility_id in p.facility_ids]

    def update_patient(
        self, tenant_id: str, patient_id: str, facility_id: str | None, body: Any, if_match: str | None = None
    ) -> Patient:
        patient = self.get_patient(tenant_id, patient_id)
        if patient.document_query is not None and patient.document_query.processing:
            raise ApiError(423, DQ_IN_PROGRESS)
        demo = validation.demographics(body)
        etag = (body or {}).get("eTag") or if_match
        if etag is not None and etag.strip('"') != patient.etag:
            raise problem(412, "PreconditionFailedError", "eTag mismatch - reload the data and try again")
        if facility_id:
            self.get_facility(tenant_id, facility_id)
            if facility_id not in patient.facility_ids:
                patient.facility_ids.append(facility_id)
        patient.demographics = demo
        if "externalId" in (body or {}):
            patient.external_id = body["externalId"]
        patient.version += 1
        return patient

    def delete_patient(self, tenant_id: str, patient_id: str) -> None:
        self.get_patient(tenant_id, patient_id)
        del self.tenant(tenant_id).patients[patient_id]

    def match_patient(self, tenant_id: str, body: Any) -> Patient:
        demo = validation.demographics(body)
        for patient in self.tenant(tenant_id).patients.values():
            if self._same_person(patient, demo):
                return patient
        raise not_found("Patient not found")

    def patient_metadata(self, tenant: Tenant, patient_id: str, flow: str) -> dict | None:
        patient = tenant.patients.get(patient_id)
        return None if patient is None else patient.metadata.get(flow)

    # -- settings --------------------------------------------------------------------------------
    def get_settings(self, tenant_id: str) -> dict:
        settings = self.tenant(tenant_id).settings
        return {
            "id": settings.id,
            "webhookUrl": settings.webhook_url,
            "webhookKey": settings.webhook_key,
            "mrFilters": settings.mr_filters,
        }

    def update_settings(self, tenant_id: str, body: Any) -> dict:
        """Set the webhook URL (the key is created once and kept across URL changes); a ping follows.
        Clearing the URL (`""`) drops the key too, so setting a URL again issues a new one: Metriport's
        way to rotate the webhook key."""
        tenant = self.tenant(tenant_id)
        data = validation.settings_body(body)
        settings = tenant.settings
        if data.get("webhookUrl") == "":
            settings.webhook_url, settings.webhook_key = None, None
        if data.get("webhookUrl"):
            self._pings_due += 1
            settings.webhook_url = data["webhookUrl"]
            if not settings.webhook_key:
                settings.webhook_key = nanoid(tenant.rng)
            settings.webhook_enabled, settings.status_detail = False, None
        if "mrFilters" in data:
            settings.mr_filters = data["mrFilters"]
        return self.get_settings(tenant_id)

    async def schedule_ping(self, tenant_id: str) -> None:
        """Runs after the POST /settings response went out; `idle()` counts the ping as due until then."""
        tenant = self.tenant(tenant_id)
        try:
            if tenant.settings.webhook_url:
                self.spawn(self.sender.ping(tenant))
        finally:
            self._pings_due = max(0, self._pings_due - 1)

    def webhook_status(self, tenant_id: str) -> dict:
        tenant = self.tenant(tenant_id)
        return {
            "webhookEnabled": tenant.settings.webhook_enabled,
            "webhookStatusDetail": tenant.settings.status_detail,
            "webhookRequestsProcessing": sum(r.status == "processing" for r in tenant.webhooks),
            "webhookRequestsFailed": sum(r.status == "failure" for r in tenant.webhooks),
        }

    def retry_webhooks(self, tenant_id: str) -> int:
        return self.sender.retry_failed(self.tenant(tenant_id))
