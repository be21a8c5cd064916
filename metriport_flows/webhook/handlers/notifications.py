"""`patient.admit` / `patient.discharge`: real-time notifications that start work instead of ending a wait.

The dispatcher turns every message into a Prefect event once its handler returns (`metriport.patient.admit`,
resource `metriport.message.<id>` labelled `metriport.patient-id`); the patient-records deployment has a
trigger on those two events, so an admission or a discharge refreshes that patient's records. What this
handler adds is the notification's FHIR bundle: its URL lives 10 minutes, so it is stored now (0600,
`{bundle_dir}/{patient_id}/notifications/{messageId}.json`). It never raises: a failed download is
logged (ids only) and must not delay the event.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx

from metriport_flows.client.errors import MetriportError
from metriport_flows.client.messages import (
    PATIENT_ADMIT,
    PATIENT_DISCHARGE,
    PatientAdmitMessage,
    PatientDischargeMessage,
)
from metriport_flows.domain.file_names import file_name, inside, private_folder
from metriport_flows.webhook.router import HandlerContext, Router

router = Router()

logger = logging.getLogger(__name__)


def notification_path(bundle_dir: Path, patient_id: str, message_id: str) -> Path:
    folder = private_folder(inside(bundle_dir, file_name(patient_id), "notifications"))
    return inside(folder, file_name(message_id, ".json"))


@router.register(PATIENT_ADMIT)
@router.register(PATIENT_DISCHARGE)
async def patient_notification(message: PatientAdmitMessage | PatientDischargeMessage, ctx: HandlerContext) -> None:
    """Store the notification bundle while its URL is valid; the dispatcher then emits the event."""
    patient_id = message.patient_id
    if not patient_id or not message.payload.url:
        logger.warning("%s %s: no patient id or bundle URL", message.type, message.message_id)
        return None
    try:
        await ctx.api.download(
            message.payload.url, notification_path(ctx.settings.bundle_dir, patient_id, message.message_id)
        )
    except (MetriportError, httpx.HTTPError, OSError, ValueError) as exc:
        logger.warning("%s %s: bundle not stored (%s)", message.type, message.message_id, type(exc).__name__)
    return None
