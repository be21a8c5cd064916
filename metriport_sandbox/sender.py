"""Webhook sender: builds, signs and posts messages in the background, like Metriport's `processRequest`.

Every stored message goes processing -> success | failure (http status, duration, detail). Sends never
raise into the API call, never follow redirects, never retry by themselves; POST /settings/webhook/retry
re-sends failures oldest first with the same messageId and `when` and no `meta.data`. Faults (drop,
duplicate, reorder) apply to first sends only, so a retry always recovers a dropped message.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Coroutine
from typing import Any, Protocol

import httpx

from metriport_flows.client.signing import SIGNATURE_HEADER, WebhookSigner, compact_json
from metriport_sandbox.config import SandboxConfig
from metriport_sandbox.faults import FaultScenario
from metriport_sandbox.ids import nanoid, uuid4
from metriport_sandbox.state import Tenant, WebhookRequest, now_iso

USER_AGENT = "Metriport API"


class SenderCore(Protocol):
    """What the sender needs of the emulator's core (`core.Core` is one)."""

    config: SandboxConfig
    faults: FaultScenario

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task: ...

    def patient_metadata(self, tenant: Tenant, patient_id: str, flow: str) -> dict | None: ...


def _disabled(data: dict | None) -> bool:
    return bool(data) and str(data.get("disableWHFlag", "")).strip().lower() == "true"


class WebhookSender:
    def __init__(self, core: SenderCore) -> None:
        self.core = core
        self.deliveries: list[dict[str, Any]] = []
        self.first_sends: dict[str, asyncio.Task] = {}

    def reset(self) -> None:
        self.deliveries.clear()
        self.first_sends.clear()

    # -- building --------------------------------------------------------------------------------
    def store(
        self,
        tenant: Tenant,
        type_: str,
        payload: dict,
        *,
        request_id: str | None,
        patient_id: str | None = None,
        metadata_flow: str | None = None,
        fault_scope: str = "",
    ) -> WebhookRequest:
        """Create the webhook record (its `when` is now) and schedule its first send."""
        count_key = f"{type_}:{fault_scope}"
        tenant.message_counts[count_key] = tenant.message_counts.get(count_key, 0) + 1
        request = WebhookRequest(
            message_id=uuid4(tenant.rng),
            type=type_,
            request_id=request_id or None,
            when=now_iso(),
            payload=payload,
            patient_id=patient_id,
            metadata_flow=metadata_flow,
            fault_key=f"{tenant.id}:{count_key}:{tenant.message_counts[count_key]}",
            seq=len(tenant.webhooks),
        )
        tenant.webhooks.append(request)
        self.first_sends[request.message_id] = self.core.spawn(self._first_send(tenant, request))
        return request

    async def wait_sent(self, request: WebhookRequest) -> None:
        """Wait for a message's first send (production sends conversion only after download)."""
        task = self.first_sends.pop(request.message_id, None)
        if task is not None:
            await asyncio.wait({task})

    def suppress(
        self, tenant: Tenant, type_: str, payload: dict, *, request_id: str | None, patient_id: str | None = None
    ) -> WebhookRequest:
        """A webhook that is turned off (fromDashboard): recorded as success, never sent."""
        request = WebhookRequest(
            message_id=uuid4(tenant.rng),
            type=type_,
            request_id=request_id or None,
            when=now_iso(),
            payload=payload,
            patient_id=patient_id,
            metadata_flow=None,
            fault_key="",
            seq=len(tenant.webhooks),
            status="success",
            status_detail="webhook disabled",
        )
        tenant.webhooks.append(request)
        self._record(request, "first", None, "success", None, 0, "suppressed: webhook disabled", sent=False)
        return request

    def body(self, tenant: Tenant, request: WebhookRequest, with_data: bool) -> tuple[bytes, dict | None]:
        meta: dict[str, Any] = {"messageId": request.message_id}
        if request.request_id:
            meta["requestId"] = request.request_id
        meta["when"] = request.when
        meta["type"] = request.type
        data = None
        if with_data and request.metadata_flow and request.patient_id:
            data = self.core.patient_metadata(tenant, request.patient_id, request.metadata_flow)
            if data is not None:
                meta["data"] = data
        return compact_json({"meta": meta, **request.payload}), data

    # -- sending ---------------------------------------------------------------------------------
    async def _first_send(self, tenant: Tenant, request: WebhookRequest) -> None:
        try:
            await self._first_send_once(tenant, request)
        finally:
            self.first_sends.pop(request.message_id, None)

    async def _first_send_once(self, tenant: Tenant, request: WebhookRequest) -> None:
        faults = self.core.faults
        if faults.chance(faults.reorder, "reorder", request.fault_key):
            await asyncio.sleep(faults.fraction("reorder", request.fault_key) * faults.reorder_delay)
        body, data = self.body(tenant, request, with_data=True)
        if _disabled(data):
            self._finish(tenant, request, "success", None, 0, "webhook disabled by metadata")
            self._record(request, "first", body, "success", None, 0, "suppressed: disableWHFlag", sent=False)
            return
        if faults.chance(faults.drop, "drop", request.fault_key):
            detail = "dropped by fault injection"
            self._finish(tenant, request, "failure", None, 0, detail)
            self._record(request, "first", body, "failure", None, 0, detail, sent=False)
            return
        await self._post(tenant, request, body, "first")
        if faults.chance(faults.duplicate, "duplicate", request.fault_key):
            await self._post(tenant, request, body, "duplicate", update=False)

    async def resend(self, tenant: Tenant, request: WebhookRequest) -> bool:
        body, _ = self.body(tenant, request, with_data=False)
        return await self._post(tenant, request, body, "retry")

    async def _post(self, tenant: Tenant, request: WebhookRequest, body: bytes, kind: str, update: bool = True) -> bool:
        settings = tenant.settings
        if not settings.webhook_url or not settings.webhook_key:
            detail = "missing webhook URL or key"
            if update:
                self._finish(tenant, request, "failure", None, 0, detail)
            self._record(request, kind, body, "failure", None, 0, detail, sent=False)
            return False
        status, http_status, millis, detail = await self._http(
            settings.webhook_url, settings.webhook_key, body, self.core.config.webhook_timeout
        )
        if update:
            self._finish(tenant, request, status, http_status, millis, detail)
        self._record(request, kind, body, status, http_status, millis, detail, sent=True, url=settings.webhook_url)
        return status == "success"

    async def _http(
        self, url: str, key: str, body: bytes, timeout: float, response_box: list | None = None
    ) -> tuple[str, int | None, int, str]:
        headers = {
            "user-agent": USER_AGENT,
            "content-type": "application/json",
            SIGNATURE_HEADER: WebhookSigner(key).sign(body),
        }
        started = time.perf_counter()
        try:
            async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            millis = int((time.perf_counter() - started) * 1000)
            return "failure", None, millis, f"timeout of {int(timeout * 1000)}ms exceeded"
        except httpx.HTTPError as exc:
            millis = int((time.perf_counter() - started) * 1000)
            return "failure", None, millis, f"{type(exc).__name__}: {exc}"
        millis = int((time.perf_counter() - started) * 1000)
        if response_box is not None:
            response_box.append(response)
        if 200 <= response.status_code < 300:
            return "success", response.status_code, millis, "OK"
        return "failure", response.status_code, millis, f"Request failed with status code {response.status_code}"

    def _finish(
        self, tenant: Tenant, request: WebhookRequest, status: str, http_status: int | None, millis: int, detail: str
    ) -> None:
        request.status, request.http_status, request.duration_ms, request.status_detail = (
            status,
            http_status,
            millis,
            detail,
        )
        if status == "success":
            tenant.settings.webhook_enabled, tenant.settings.status_detail = True, "OK"
        else:
            tenant.settings.webhook_enabled, tenant.settings.status_detail = False, detail

    def _record(
        self,
        request: WebhookRequest,
        kind: str,
        body: bytes | None,
        status: str,
        http_status: int | None,
        millis: int,
        detail: str,
        sent: bool,
        url: str | None = None,
    ) -> None:
        self._delivery(
            (request.message_id, request.type, request.request_id, request.patient_id),
            kind,
            body,
            (status, http_status, millis, detail),
            sent=sent,
            url=url,
        )

    def _delivery(
        self,
        message: tuple[str | None, str | None, str | None, str | None],
        kind: str,
        body: bytes | None,
        outcome: tuple[str, int | None, int, str | None],
        *,
        sent: bool,
        url: str | None,
    ) -> None:
        """One row of `/_sandbox/deliveries`: (message id, type, request id, patient id), how it went."""
        message_id, type_, request_id, patient_id = message
        status, http_status, millis, detail = outcome
        self.deliveries.append(
            {
                "seq": len(self.deliveries),
                "message_id": message_id,
                "type": type_,
                "request_id": request_id,
                "patient_id": patient_id,
                "kind": kind,
                "sent": sent,
                "status": status,
                "http_status": http_status,
                "duration_ms": millis,
                "detail": detail,
                "sha256": hashlib.sha256(body).hexdigest() if body is not None else None,
                "size": len(body) if body is not None else None,
                "url": url,
                "at": now_iso(),
            }
        )

    # -- ping and retry --------------------------------------------------------------------------
    async def ping(self, tenant: Tenant) -> None:
        """The test message sent after POST /settings: not stored, never retried, pong checked."""
        settings = tenant.settings
        if not settings.webhook_url or not settings.webhook_key:
            return
        ping = nanoid(tenant.rng)
        message_id = uuid4(tenant.rng)
        body = compact_json({"ping": ping, "meta": {"messageId": message_id, "when": now_iso(), "type": "ping"}})
        box: list = []
        status, http_status, millis, detail = await self._http(
            settings.webhook_url, settings.webhook_key, body, self.core.config.ping_timeout, box
        )
        if status == "success":
            try:
                pong = box[0].json().get("pong")
            except (ValueError, AttributeError):
                pong = None
            if pong != ping:
                status, detail = "failure", "Bad response from webhook call"
        settings.webhook_enabled, settings.status_detail = (status == "success", detail)
        self._delivery(
            (message_id, "ping", None, None),
            "first",
            body,
            (status, http_status, millis, detail),
            sent=True,
            url=settings.webhook_url,
        )

    async def send_sample(self, tenant: Tenant, payload: dict) -> dict:
        """POST /settings/webhook/sample-payload: sign and send the body as-is, answer with the outcome."""
        settings = tenant.settings
        if not settings.webhook_url or not settings.webhook_key:
            return {"status": "failure", "webhookResponse": None, "url": settings.webhook_url, "durationMillis": 0}
        body = compact_json(payload)
        box: list = []
        status, http_status, millis, detail = await self._http(
            settings.webhook_url, settings.webhook_key, body, self.core.config.webhook_timeout, box
        )
        meta = payload.get("meta") if isinstance(payload.get("meta"), dict) else {}
        self._delivery(
            (meta.get("messageId"), meta.get("type"), meta.get("requestId"), None),
            "sample",
            body,
            (status, http_status, millis, detail),
            sent=True,
            url=settings.webhook_url,
        )
        answer: Any = None
        if box:
            try:
                answer = box[0].json()
            except ValueError:
                answer = box[0].text
        return {"status": status, "webhookResponse": answer, "url": settings.webhook_url, "durationMillis": millis}

    def retry_failed(self, tenant: Tenant) -> int:
        failed = sorted((r for r in tenant.webhooks if r.status == "failure"), key=lambda r: (r.when, r.seq))
        for request in failed:
            request.status = "processing"
        if failed:
            self.core.spawn(self._retry_all(tenant, failed))
        return len(failed)

    async def _retry_all(self, tenant: Tenant, failed: list[WebhookRequest]) -> None:
        for request in failed:
            if await self.resend(tenant, request):
                await asyncio.sleep(tenant.rng.uniform(0, self.core.config.retry_pause_max))
