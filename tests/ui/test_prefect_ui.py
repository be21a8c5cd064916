"""The UI path a person takes, in a real browser (Playwright driving Debian's chromium) on the session's
stack: start a patient-records run from the deployment's Custom run form, see it complete, open its
artifact and read the resource count; resume a suspended run from the Resume form with outcome
`timeout` and see the run end with that message. Screenshots go to a folder under the test's tmp path
(their paths are printed). Skips, saying why, where chromium or playwright is missing."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_fixed

from metriport_devtools.stack import LocalStack
from metriport_flows.store import Store
from tests.fixtures.sandbox import FACILITY
from tests.fixtures.stack import read_flow_run, wait_for_final_state, wait_for_state_name

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
if CHROMIUM is None:
    pytest.skip(
        "no chromium on this machine (apt-get install chromium; make test does it as root)", allow_module_level=True
    )

Page = sync_api.Page
Response = sync_api.Response
TIMEOUT_MS = 120_000


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


@pytest.fixture
def page(screenshots: Path) -> Iterator[Page]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()
    for shot in sorted(screenshots.iterdir()):
        print(f"screenshot: {shot}")


def shoot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{len(list(folder.iterdir())):02d}-{name}.png"), full_page=True)


def seed_patient(api: httpx.Client, first_name: str) -> str:
    facility = api.post("/medical/v1/facility", json=FACILITY).raise_for_status().json()["id"]
    body = {
        "firstName": first_name,
        "lastName": f"Ui{uuid.uuid4().hex[:8]}",
        "dob": "1980-01-01",
        "genderAtBirth": "F",
        "address": [{"addressLine1": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}],
    }
    return api.post("/medical/v1/patient", params={"facilityId": facility}, json=body).raise_for_status().json()["id"]


def deployment_id(stack: LocalStack) -> str:
    response = httpx.get(f"{stack.prefect_api_url}/deployments/name/patient-records/on-demand", timeout=10)
    return str(response.raise_for_status().json()["id"])


def submit(page: Page, call: Callable[[Response], bool]) -> Response:
    """Click the form's Submit and return the answer to its `call`. The embedded SQLite server answers
    503 while it is busy with other writes (docs/prefect.md; nothing was created or resumed then), and a
    person clicks again: up to three times."""

    def once() -> Response:
        with page.expect_response(call, timeout=TIMEOUT_MS) as answered:
            page.get_by_role("button", name="Submit").click()
        return answered.value

    return Retrying(
        stop=stop_after_attempt(3),
        wait=wait_fixed(1),
        retry=retry_if_result(lambda answer: answer.status == 503),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )(once)


def start_from_custom_run_form(page: Page, stack: LocalStack, screenshots: Path, fields: dict[str, str]) -> str:
    """Fill the Custom run form, submit, and return the id of the run its create call made.

    Each value is checked to have taken before Submit (the form may still be rendering its defaults), and
    the run id comes from the form's own POST, not from a search among the session's runs."""
    page.goto(f"{stack.prefect_url}/deployments/deployment/{deployment_id(stack)}/run")
    for label, value in fields.items():
        # The form's labels are not bound to their inputs: the field is the first input after its label.
        field = page.locator(
            f"xpath=//*[starts-with(normalize-space(text()), '{label}')]/following::*[self::textarea or self::input][1]"
        )
        field.fill(value)
        sync_api.expect(field).to_have_value(value, timeout=TIMEOUT_MS)
    shoot(page, screenshots, "custom-run-form")
    try:
        answer = submit(page, lambda r: r.request.method == "POST" and r.url.endswith("/create_flow_run"))
    finally:
        shoot(page, screenshots, "submitted")
    assert answer.ok, f"the form's create call answered {answer.status}: {answer.text()}"
    run = answer.json()
    assert run["parameters"]["request"]["patient_id"] == fields["Patient Id"], run["parameters"]
    return str(run["id"])


def choose_outcome(page: Page, outcome: str) -> None:
    """The Resume form's Outcome field: a native select, or the UI's searchable combobox."""
    field = page.locator(
        "xpath=//*[normalize-space(text())='Outcome']/following::*[self::select or @role='combobox' or "
        "contains(@class, 'p-select') or contains(@class, 'p-combobox')][1]"
    )
    native = field if field.evaluate("element => element.tagName") == "SELECT" else field.locator("select")
    if native.count():
        native.first.select_option(outcome)
        return
    field.click()  # the UI's searchable combobox: type to filter, then pick the option
    page.keyboard.type(outcome)
    page.get_by_text(outcome, exact=True).last.click()


def open_run(page: Page, stack: LocalStack, run_id: str, screenshots: Path, name: str) -> str:
    page.goto(f"{stack.prefect_url}/runs/flow-run/{run_id}")
    page.wait_for_load_state("networkidle")
    shoot(page, screenshots, name)
    return page.inner_text("body")


def test_a_run_from_the_custom_run_form_completes_and_its_artifact_shows_the_resources(
    local_stack: LocalStack, stack_api: httpx.Client, page: Page, screenshots: Path
) -> None:
    patient_id = seed_patient(stack_api, "Jane")
    run_id = start_from_custom_run_form(page, local_stack, screenshots, {"Patient Id": patient_id})
    run = wait_for_final_state(local_stack, run_id)
    assert run.state is not None and run.state.is_completed(), run.state
    shown = open_run(page, local_stack, run_id, screenshots, "run-completed")
    assert f"patient-records · {patient_id}" in shown and "Completed" in shown

    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text(f"patient-records-{patient_id}").first.click()
    page.get_by_text(f"Patient records: {patient_id}").wait_for(timeout=TIMEOUT_MS)
    shoot(page, screenshots, "artifact")
    row = page.locator("tr", has=page.locator("td", has_text=re.compile(r"^Resources$"))).first
    resources = int(row.locator("td").nth(1).inner_text().split()[0])
    assert resources > 0
    assert resources == expected_resources(local_stack, run_id)


def expected_resources(stack: LocalStack, run_id: str) -> int:
    """The resource count the run stored in the waits table's consolidated resolution's bundle."""
    import gzip  # noqa: E401
    import json

    from metriport_flows.domain.patient_records import count_bundle_resources

    store = Store(stack.database_url)
    try:
        [wait] = [w for w in store.waits_for_run(run_id) if w.stage == "consolidated"]
        path = Path((wait.result or {})["bundle_path"])
    finally:
        store.dispose()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return sum(count_bundle_resources(json.load(handle), validate=False).values())


def test_a_suspended_run_resumed_from_the_resume_form_with_timeout_ends_with_that_message(
    local_stack: LocalStack,
    stack_api: httpx.Client,
    sandbox_control: httpx.Client,
    page: Page,
    screenshots: Path,
) -> None:
    patient_id = seed_patient(stack_api, "Chris")
    sandbox_control.post("/config", json={"delay": [600, 600]}).raise_for_status()  # no webhook comes in time
    try:
        run_id = start_from_custom_run_form(
            page, local_stack, screenshots, {"Patient Id": patient_id, "Hot Window Seconds": "0"}
        )
        wait_for_state_name(local_stack, run_id, "Suspended", timeout=90)
        open_run(page, local_stack, run_id, screenshots, "run-suspended")
        page.get_by_role("button", name="Resume").click()
        shoot(page, screenshots, "resume-form")
        try:
            choose_outcome(page, "timeout")
        finally:
            shoot(page, screenshots, "resume-form-outcome")
        shoot(page, screenshots, "resume-form-filled")
        answer = submit(page, lambda r: r.url.endswith(f"/flow_runs/{run_id}/resume"))
        assert answer.ok and "ACCEPT" in answer.text(), (
            f"the Resume form's call answered {answer.status}: {answer.text()}"
        )
        run = wait_for_final_state(local_stack, run_id)
    finally:
        sandbox_control.post("/config", json={"delay": [0, 0]}).raise_for_status()
    assert run.state is not None and run.state.type.value == "FAILED", run.state
    message = f"Document query for patient {patient_id} passed its hard deadline"
    assert message in (run.state.message or "")
    shown = open_run(page, local_stack, run_id, screenshots, "run-ended")
    assert "Failed" in shown and message in shown
    assert read_flow_run(local_stack, run_id).state_name == "Failed"
