"""What the receiver reads of a webhook before it answers: the ids the inbox stores it under.

The typed message (`messages.parse_message`) is the dispatcher's to build, after the answer: the receiver
needs only `meta` and the patient, and a shape it cannot type is stored all the same (the dispatcher
keeps it as a `GenericMessage`). Parsing only this much is what keeps the answer cheap under a burst.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metriport_flows.client.messages import PING, InvalidMessage, load_body, parse_meta, patient_id_of

__all__ = ["Envelope", "InvalidMessage", "parse_envelope"]


@dataclass(frozen=True)
class Envelope:
    message_id: str
    type: str
    request_id: str | None
    patient_id: str | None
    flow_run_id: str | None
    stage: str | None
    ping: str | None  # a ping's challenge, answered as `pong`; None for every other message


def parse_envelope(body: bytes | str | dict[str, Any]) -> Envelope:
    """The envelope of a webhook body; raises InvalidMessage when it is not a Metriport message."""
    try:
        data = load_body(body)
        meta = parse_meta(data)
        patient_id = patient_id_of(data, meta.type)
    except RecursionError:
        raise InvalidMessage("body is nested too deeply") from None
    challenge = data.get("ping", "")
    return Envelope(
        message_id=meta.message_id,
        type=meta.type,
        request_id=meta.request_id,
        patient_id=patient_id,
        flow_run_id=meta.flow_run_id,
        stage=meta.stage,
        ping=challenge if meta.type == PING and isinstance(challenge, str) else None,
    )
