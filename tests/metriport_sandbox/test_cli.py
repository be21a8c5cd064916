"""`metriport-sandbox` starts uvicorn with the options given."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from metriport_sandbox.cli import app as sandbox_app
from tests.fixtures.emulator import api_key_for, free_port

COMMAND = [sys.executable, "-m", "metriport_sandbox"]


def test_cli_starts_the_emulator_with_options():
    port = free_port()
    process = subprocess.Popen(
        [
            *COMMAND,
            "--port",
            str(port),
            "--mode",
            "production",
            "--seed",
            "3",
            "--delay",
            "0,0",
            "--faults",
            "drop=0.1,api_429.documentQuery=0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        faults = None
        while time.monotonic() < deadline and faults is None:
            try:
                faults = httpx.get(f"{base}/_sandbox/faults", trust_env=False).json()
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read().decode()
                time.sleep(0.1)
        assert faults is not None
        assert faults["drop"] == 0.1 and faults["op_429"] == {"documentQuery": 0.2} and faults["seed"] == 3
        config = httpx.post(f"{base}/_sandbox/config", json={}, trust_env=False).json()
        assert config["mode"] == "production" and config["delay"] == [0.0, 0.0]
        assert config["public_url"] == base
        response = httpx.get(
            f"{base}/medical/v1/facility", headers={"x-api-key": api_key_for("cli-tenant")}, trust_env=False
        )
        assert response.json() == {"facilities": []}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_cli_rejects_bad_options():
    for args in (["--mode", "staging"], ["--faults", "explode=1"], ["--delay", "5,1"]):
        result = CliRunner().invoke(sandbox_app, args)
        assert result.exit_code == 2, (args, result.output)
