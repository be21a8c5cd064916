"""The handlers are composed in one place, each message type with exactly one handler."""

import pytest

from metriport_flows.client import messages
from metriport_flows.domain.stages import Stage
from metriport_flows.webhook.handlers import metriport_router
from metriport_flows.webhook.router import Router


def test_every_message_type_the_dispatcher_knows_has_one_handler_and_its_stage():
    router = metriport_router()
    assert router.message_types == sorted(
        [
            messages.CONSOLIDATED_DATA,
            messages.DOCUMENT_DOWNLOAD,
            messages.DOCUMENT_CONVERSION,
            messages.BULK_DOWNLOAD_URLS,
            messages.BULK_PATIENT_CREATE,
            messages.PATIENT_ADMIT,
            messages.PATIENT_DISCHARGE,
        ]
    )
    stages = {t: router.get(t).stage for t in router.message_types}  # type: ignore[union-attr]
    assert stages[messages.CONSOLIDATED_DATA] == Stage.consolidated
    assert stages[messages.DOCUMENT_CONVERSION] == stages[messages.DOCUMENT_DOWNLOAD] == Stage.documents
    assert stages[messages.PATIENT_ADMIT] is stages[messages.PATIENT_DISCHARGE] is None


def test_two_handlers_for_one_message_type_are_refused_when_composed():
    first, second = Router(), Router()

    async def handle(message: object, ctx: object) -> None:
        return None

    first.register("medical.consolidated-data")(handle)
    second.register("medical.consolidated-data")(handle)
    with pytest.raises(ValueError, match="two handlers"):
        Router.compose(first, second)
