"""The machine probes a wait weighs giving way with, read from this real machine's /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from metriport_flows.machine import MachineLoad, process_age_seconds

BURN = "while True: pass"


def test_a_process_s_age_counts_from_its_start() -> None:
    code = "import time; time.sleep(0.5); from metriport_flows.machine import process_age_seconds as a; print(a())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0.5 <= age < 30
    before = process_age_seconds()
    time.sleep(0.05)
    assert process_age_seconds() > before > 0


def test_the_load_is_the_busy_share_since_the_last_call_and_sees_every_cpu_burn() -> None:
    load = MachineLoad()
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(1.0)
        busy = load()
        again = load()  # at once, mostly within the same tick: the last share, not a 0/0
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert 0.8 <= busy <= 1.0
    assert 0.8 <= again <= 1.0
