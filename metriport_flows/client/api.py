"""Async client for Metriport's Medical API (docs/metriport.md §1–§2), Prefect-free so tests drive it directly.

Base URL: the local emulator (http://127.0.0.1:8081) by default; Metriport's sandbox is
https://api.sandbox.metriport.com and production https://api.metriport.com. Medical endpoints live
under /medical/v1, the settings endpoints at the root.

Retries happen in the transport (`httpx_retries.RetryTransport`), never in a loop here. Which calls may
be repeated is a deliberate per-call choice:

- repeated freely on 429, 5xx and transport errors (`RETRY`): every GET; PUT and DELETE; POST /patient
  (Metriport returns the existing patient for the same demographics); POST /patient/match (a read);
  POST /document/query, POST /document/download-url/bulk and POST /patient/{id}/consolidated/query
  (single-flight server side: a repeat returns the running request's requestId); POST /settings (sets
  the same URL again; only an extra ping).
- repeated only when the request cannot have been acted on (`ONCE`: 429 and connect errors): POST
  /facility and POST /patient/bulk (each call creates a new one), POST /settings/webhook/retry (re-sends
  every failed message), and the single-use PUT of the bulk-create CSV.

The API key goes only to the API base URL (a per-request header), never to presigned file URLs, and
never into a repr or log.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
from httpx_retries import Retry, RetryTransport
from pydantic import BaseModel, SecretStr

from metriport_flows.client import models as m
from metriport_flows.client.errors import (
    TRANSIENT_STATUSES,
    NotAFile,
    NotFound,
    error_from_response,
    url_expired,
)
from metriport_flows.client.metadata import metadata_body
from metriport_flows.domain.file_names import private_folder
from metriport_flows.settings import (
    EMULATOR_API_KEY,
    EMULATOR_URL,
    Settings,
    get_settings,
)

API_KEY_HEADER = "x-api-key"
MEDICAL_PREFIX = "/medical/v1"
USER_AGENT = "metriport-flows"
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Model = TypeVar("Model", bound=BaseModel)


def default_retry(total: int = 5, backoff_factor: float = 0.5, max_backoff_wait: float = 30.0) -> Retry:
    """Policy for idempotent calls: 429 (honouring Retry-After), 5xx, transport errors, jittered backoff."""
    return Retry(
        total=total,
        allowed_methods=["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST"],
        status_forcelist=TRANSIENT_STATUSES,
        backoff_factor=backoff_factor,
        max_backoff_wait=max_backoff_wait,
        respect_retry_after_header=True,
        total_timeout=max(max_backoff_wait * 3, 1.0),
    )


def once_only(retry: Retry) -> Retry:
    """The same policy narrowed to failures where the server cannot have acted: 429 and connect errors."""
    return retry.copy_with(status_forcelist=[429], retry_on_exceptions=NOT_SENT_ERRORS)


def _day(value: date | str | None) -> str | None:
    return value.isoformat() if isinstance(value, date) else value


def _params(**values: Any) -> dict[str, str]:
    """Query parameters with None dropped and booleans spelled as Metriport's Zod expects."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _dump(body: BaseModel | Mapping[str, Any]) -> Any:
    if isinstance(body, BaseModel):
        return body.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dict(body)


class MedicalApi:
    """Typed async Medical API client. Use as `async with MedicalApi.from_settings() as api: ...`.

    Pass `transport` (e.g. `httpx.ASGITransport(app)`) to talk to an in-process emulator; it is
    wrapped in the retry transport. Pass `client` to bring a fully configured `httpx.AsyncClient`
    (its own transport and retries; this object will not close it).
    """

    def __init__(
        self,
        base_url: str = EMULATOR_URL,
        api_key: str | SecretStr = EMULATOR_API_KEY,
        timeout: float = 20.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: Retry | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self.retry = retry or default_retry()
        self._once = once_only(self.retry)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            transport=RetryTransport(transport=transport, retry=self.retry),
            timeout=timeout,
            headers={"user-agent": USER_AGENT},
        )

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> MedicalApi:
        settings = settings or get_settings()
        return cls(
            settings.metriport_base_url,
            settings.metriport_api_key,
            settings.metriport_timeout_seconds,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"MedicalApi(base_url={self.base_url!r}, api_key=***)"

    async def __aenter__(self) -> MedicalApi:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # -- plumbing -------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        retry: Retry | None = None,
        root: bool = False,
    ) -> httpx.Response:
        url = self.base_url + ("" if root else MEDICAL_PREFIX) + path
        response = await self._client.request(
            method,
            url,
            params=params,
            json=json,
            headers={API_KEY_HEADER: self._api_key.get_secret_value()},
            extensions={"retry": retry or self.retry},
        )
        if response.is_error:
            raise error_from_response(response)
        return response

    async def _get(self, model: type[Model], path: str, **kwargs: Any) -> Model:
        return model.model_validate((await self._request("GET", path, **kwargs)).json())

    # -- facilities -----------------------------------------------------------------------------

    async def create_facility(self, facility: m.FacilityCreate | Mapping[str, Any]) -> m.Facility:
        response = await self._request("POST", "/facility", json=_dump(facility), retry=self._once)
        return m.Facility.model_validate(response.json())

    async def list_facilities(self) -> list[m.Facility]:
        body = (await self._request("GET", "/facility")).json()
        return [m.Facility.model_validate(f) for f in body.get("facilities") or []]

    async def get_facility(self, facility_id: str) -> m.Facility:
        return await self._get(m.Facility, f"/facility/{facility_id}")

    async def update_facility(self, facility_id: str, facility: m.FacilityCreate | Mapping[str, Any]) -> m.Facility:
        response = await self._request("PUT", f"/facility/{facility_id}", json=_dump(facility))
        return m.Facility.model_validate(response.json())

    async def delete_facility(self, facility_id: str) -> None:
        await self._request("DELETE", f"/facility/{facility_id}")

    # -- patients -------------------------------------------------------------------------------

    async def create_patient(self, facility_id: str, demographics: m.Demographics | Mapping[str, Any]) -> m.Patient:
        """Idempotent on demographics: the same person again returns the existing patient."""
        response = await self._request(
            "POST", "/patient", params=_params(facilityId=facility_id), json=_dump(demographics)
        )
        return m.Patient.model_validate(response.json())

    async def get_patient(self, patient_id: str) -> m.Patient:
        return await self._get(m.Patient, f"/patient/{patient_id}")

    async def update_patient(
        self,
        patient_id: str,
        demographics: m.Demographics | Mapping[str, Any],
        facility_id: str | None = None,
        e_tag: str | None = None,
    ) -> m.Patient:
        """Full replacement; raises Locked (423) while a document query is processing."""
        body = _dump(demographics)
        if e_tag:
            body["eTag"] = e_tag
        response = await self._request(
            "PUT", f"/patient/{patient_id}", params=_params(facilityId=facility_id), json=body
        )
        return m.Patient.model_validate(response.json())

    async def delete_patient(self, patient_id: str, facility_id: str | None = None) -> None:
        await self._request("DELETE", f"/patient/{patient_id}", params=_params(facilityId=facility_id))

    async def match_patient(self, demographics: m.Demographics | Mapping[str, Any]) -> m.Patient | None:
        try:
            response = await self._request("POST", "/patient/match", json=_dump(demographics))
        except NotFound:
            return None
        return m.Patient.model_validate(response.json())

    async def list_patients(self, facility_id: str | None = None) -> list[m.Patient]:
        body = (await self._request("GET", "/patient", params=_params(facilityId=facility_id))).json()
        return [m.Patient.model_validate(p) for p in body.get("patients") or []]

    async def get_patient_page(self, facility_id: str | None = None, count: int = 50, **page: str) -> m.PatientPage:
        params = _params(facilityId=facility_id, count=count, **page)
        return await self._get(m.PatientPage, "/patient", params=params)

    async def iter_patients(self, facility_id: str | None = None, page_size: int = 50) -> AsyncIterator[m.Patient]:
        """Every patient, page by page, following `meta.nextPage` (its query only: the API key is never
        sent to a host the server names)."""
        params = _params(facilityId=facility_id, count=page_size)
        while True:
            page = await self._get(m.PatientPage, "/patient", params=params)
            for patient in page.patients:
                yield patient
            if not page.meta.next_page or not page.patients:
                return
            params = dict(parse_qsl(urlsplit(page.meta.next_page).query))

    # -- documents ------------------------------------------------------------------------------

    async def start_document_query(
        self,
        patient_id: str,
        facility_id: str | None = None,
        override: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> m.DocumentQueryProgress:
        """Start (or join the running) document query; compare requestIds to tell which happened."""
        body = metadata_body(metadata)
        params = _params(patientId=patient_id, facilityId=facility_id, override=override or None)
        response = await self._request("POST", "/document/query", params=params, json=body)
        return m.DocumentQueryProgress.model_validate(response.json())

    async def get_document_query(self, patient_id: str) -> m.DocumentQueryProgress:
        params = _params(patientId=patient_id)
        return await self._get(m.DocumentQueryProgress, "/document/query", params=params)

    async def list_documents(
        self, patient_id: str, date_from: date | str | None = None, date_to: date | str | None = None
    ) -> list[m.FhirDocumentReference]:
        params = _params(patientId=patient_id, dateFrom=_day(date_from), dateTo=_day(date_to))
        return (await self._get(m.DocumentList, "/document", params=params)).documents

    async def get_download_url(self, file_name: str, conversion_type: str | None = None) -> str:
        """A presigned GET URL (valid about 3 minutes); `conversion_type` html|pdf for XML files."""
        params = _params(fileName=file_name, conversionType=conversion_type)
        return (await self._get(m.DownloadUrl, "/document/download-url", params=params)).url

    async def start_bulk_download(self, patient_id: str, metadata: Mapping[str, str] | None = None) -> m.BulkUrlStatus:
        body = metadata_body(metadata)
        response = await self._request(
            "POST", "/document/download-url/bulk", params=_params(patientId=patient_id), json=body
        )
        return m.BulkUrlStatus.model_validate(response.json())

    # -- consolidated data ----------------------------------------------------------------------

    async def start_consolidated_query(
        self,
        patient_id: str,
        conversion_type: str,
        resources: Iterable[str] | None = None,
        date_from: date | str | None = None,
        date_to: date | str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> m.ConsolidatedQuery:
        """Start a consolidated query (json|pdf|html); identical params while one runs return it."""
        body = metadata_body(metadata)
        params = _params(
            conversionType=conversion_type,
            resources=",".join(resources) if resources else None,
            dateFrom=_day(date_from),
            dateTo=_day(date_to),
        )
        response = await self._request("POST", f"/patient/{patient_id}/consolidated/query", params=params, json=body)
        return m.ConsolidatedQuery.model_validate(response.json())

    async def get_consolidated_queries(self, patient_id: str) -> m.ConsolidatedQueries:
        return await self._get(m.ConsolidatedQueries, f"/patient/{patient_id}/consolidated/query")

    async def get_consolidated_query(self, patient_id: str, request_id: str) -> m.ConsolidatedQuery:
        path = f"/patient/{patient_id}/consolidated/query/{request_id}"
        return await self._get(m.ConsolidatedQuery, path)

    async def get_consolidated_webhook(self, patient_id: str, request_id: str) -> m.ConsolidatedWebhookStatus:
        """What the webhook said for this request (its file URLs are probably expired by now)."""
        path = f"/patient/{patient_id}/consolidated/webhook"
        params = _params(requestId=request_id)
        return await self._get(m.ConsolidatedWebhookStatus, path, params=params)

    # -- bulk patient create --------------------------------------------------------------------

    async def start_bulk_patient_create(self, facility_id: str | None = None, dry_run: bool = False) -> m.BulkCreateJob:
        params = _params(facilityId=facility_id, dryRun=dry_run or None)
        response = await self._request("POST", "/patient/bulk", params=params, retry=self._once)
        return m.BulkCreateJob.model_validate(response.json())

    async def upload_bulk_csv(self, upload_url: str, csv_bytes: bytes) -> None:
        """PUT the CSV to the job's single-use presigned URL (no API key goes there)."""
        response = await self._client.put(
            upload_url,
            content=csv_bytes,
            headers={"content-type": "text/csv"},
            extensions={"retry": self._once},
        )
        if response.status_code == 403:
            raise url_expired(response)
        if response.is_error:
            raise error_from_response(response)

    # -- settings and webhooks ------------------------------------------------------------------

    async def get_settings(self) -> m.WebhookSettings:
        return await self._get(m.WebhookSettings, "/settings", root=True)

    async def update_settings(self, webhook_url: str) -> m.WebhookSettings:
        """Set the webhook URL; Metriport then sends a `ping` to it."""
        response = await self._request("POST", "/settings", json={"webhookUrl": webhook_url}, root=True)
        return m.WebhookSettings.model_validate(response.json())

    async def get_webhook_status(self) -> m.WebhookStatus:
        return await self._get(m.WebhookStatus, "/settings/webhook", root=True)

    async def retry_webhooks(self) -> None:
        """Ask Metriport to re-send every failed webhook (same messageId, no meta.data)."""
        await self._request("POST", "/settings/webhook/retry", root=True, retry=self._once)

    # -- files ----------------------------------------------------------------------------------

    async def download(self, url: str, dest: Path, chunk_size: int = 1 << 20) -> m.Downloaded:
        """Stream a presigned URL to `dest` (mode 0600, written atomically), hashing as it goes.

        Raises UrlExpired on 403: ask for a fresh URL; NotAFile on any other answer but 200 (a 3xx body is
        not the file, and a redirect is not followed). The bytes kept are the bytes served.
        """
        dest = Path(dest)
        private_folder(dest.parent)
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        digest = hashlib.sha256()
        size = 0
        headers = {"accept-encoding": "identity"}
        async with self._client.stream("GET", url, headers=headers, follow_redirects=False) as response:
            if response.status_code == 403:
                await response.aread()
                raise url_expired(response)
            if response.is_error:
                await response.aread()
                raise error_from_response(response)
            if response.status_code != 200:
                raise NotAFile(response.status_code, response.reason_phrase)
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as file:
                    async for chunk in response.aiter_raw(chunk_size):
                        digest.update(chunk)
                        file.write(chunk)
                        size += len(chunk)
                os.chmod(part, 0o600)
                os.replace(part, dest)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            content_type = response.headers.get("content-type")
        return m.Downloaded(path=dest, sha256=digest.hexdigest(), size=size, content_type=content_type)
