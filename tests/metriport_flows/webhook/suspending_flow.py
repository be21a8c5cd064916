"""A flow that waits the way patient_records does, minus the hot window: register a documents wait,
suspend on its pause key (or fail right after registering, when asked), and write the run input it was resumed with (ids and counts only) to a file.
Served by tests/metriport_flows/webhook/test_prefect_resume.py: `python -m tests.metriport_flows.webhook.suspending_flow`."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from prefect import flow, serve
from prefect.context import get_run_context
from prefect.flow_runs import suspend_flow_run

from metriport_flows.domain.stages import DocumentsReady, Stage
from metriport_flows.store import Store, utcnow

DEPLOYMENT = "d-wait-for-documents/resume-test"


@flow(name="d-wait-for-documents")
def wait_for_documents(patient_id: str, out_dir: str, fail_after_register: bool = False) -> None:
    run_id = str(get_run_context().flow_run.id)
    store = Store(os.environ["DATABASE_URL"])
    wait = store.register_wait(
        flow_run_id=run_id,
        stage=Stage.documents,
        attempt=1,
        patient_id=patient_id,
        soft_deadline=utcnow() + timedelta(minutes=5),
        hard_deadline=utcnow() + timedelta(hours=1),
    )
    store.dispose()
    if fail_after_register:
        raise RuntimeError("failed after registering its wait")
    result = suspend_flow_run(wait_for_input=DocumentsReady, key=wait.pause_key, timeout=None)
    Path(out_dir, f"{run_id}.json").write_text(result.model_dump_json())


if __name__ == "__main__":
    serve(wait_for_documents.to_deployment(name="resume-test"))
