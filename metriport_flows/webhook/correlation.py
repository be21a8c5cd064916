"""Which waits a webhook message ends.

A message is found its wait by `meta.requestId`, then `meta.data.flowRunId`, then the patient's latest
wait of the stage, and never a wait it cannot belong to (`belongs`). Two runs for one patient share
Metriport's query: a second start call while one is processing answers with the running query's request
id (docs/metriport.md §3.1, §4.1), so the one message that ends the query ends every open wait of the stage
that recorded that request id.
"""

from __future__ import annotations

from metriport_flows.client.messages import WebhookMessage
from metriport_flows.domain.stages import Stage
from metriport_flows.store import Store, Wait, WaitStatus


def correlate(store: Store, message: WebhookMessage, stage: Stage) -> tuple[list[Wait], str]:
    """The wait found (first, whatever its status) and the other open waits sharing its request id;
    how it was found."""
    by_request = store.waits_for_request(message.request_id, stage) if message.request_id else []
    wait, path = _found(store, message, stage, by_request)
    if wait is None:
        return [], path
    if not message.request_id and wait.request_id:
        by_request = store.waits_for_request(wait.request_id, stage)
    sharing = [
        other
        for other in by_request
        if other.id != wait.id and other.status == WaitStatus.open and belongs(other, message, same_run=True)
    ]
    return [wait, *reversed(sharing)], path


def _found(store: Store, message: WebhookMessage, stage: Stage, by_request: list[Wait]) -> tuple[Wait | None, str]:
    """`by_request`: the waits holding the message's request id, newest first."""
    if by_request and belongs(by_request[0], message, same_run=True):
        return by_request[0], "request_id"
    if message.flow_run_id:
        of_run = store.latest_wait_for_run(message.flow_run_id, stage)
        if of_run is not None and belongs(of_run, message, same_run=True):
            return of_run, "flow_run_id"
    if message.patient_id:
        of_patient = store.latest_wait_for_patient(message.patient_id, stage)
        if of_patient is not None and belongs(of_patient, message, same_run=False):
            return of_patient, "patient"
    return None, "none"


def belongs(wait: Wait, message: WebhookMessage, *, same_run: bool) -> bool:
    """An old or foreign message never ends a new run's wait: one sent before the wait was registered
    (`meta.when`), or carrying another request id, is not its answer. A message with a request id found
    only through the patient waits until the wait has recorded that id (the start call's answer), which
    wakes it; one without a request id (the sandbox's conversion message) must be sent after the wait
    was registered."""
    sent = message.meta.when_at
    if sent is not None and sent < wait.created_at:
        return False
    if message.request_id:
        if wait.request_id:
            return wait.request_id == message.request_id
        return same_run
    return sent is not None or same_run
