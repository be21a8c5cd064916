"""After a real `metriport-dev demo`, what it leaves (its logs, the inbox's error columns, `stack.json`,
Prefect's tables) and what it prints hold no PHI and no secret: the same scans as test_phi_hygiene.py,
on the demo's own folder instead of the test session's stack."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from metriport_devtools.processes import venv_bin
from metriport_devtools.project import ROOT
from metriport_devtools.stack import LocalStack
from tests.e2e.test_phi_hygiene import (
    copy_database,
    log_files,
    phi_pattern,
    phi_values,
    scan_files,
    scan_for_leaks,
    secret_pattern,
    secret_values,
)

pytestmark = pytest.mark.e2e


def test_a_demo_run_leaks_no_phi_or_secret(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    demo = [venv_bin("metriport-dev"), "demo", "--root", str(root), "--keep", "--no-cohort", "--others", "0"]
    try:
        shown = subprocess.run(
            [*demo, "--patients", "jane"], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
        )
        assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-3000:]
        assert "completed" in shown.stdout
        emulator = json.loads((root / "stack.json").read_text())["emulator"]
        stack = LocalStack(root)
        settings = httpx.get(f"{emulator}/settings", headers={"x-api-key": stack.api_key}, timeout=10)
        stack.webhook_key = settings.raise_for_status().json()["webhookKey"]
        prefect = copy_database(stack.prefect_db_path, tmp_path / "prefect.db")
        inbox = copy_database(stack.inbox_db_path, tmp_path / "inbox.db")
        findings = scan_for_leaks(stack, prefect, log_files(stack), inbox)
        printed = tmp_path / "printed.txt"
        printed.write_text(shown.stdout + shown.stderr)
        for pattern in (phi_pattern(phi_values()), secret_pattern(secret_values(stack))):
            findings += scan_files([printed], pattern)
        assert findings == [], f"PHI or secrets found: {sorted(set(findings))[:20]}"
    finally:
        subprocess.run([*demo[:2], "--stop", "--root", str(root)], cwd=ROOT, capture_output=True, timeout=120)
