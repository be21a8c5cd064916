"""`make bench`: every benchmark, one after the other, each printing its side-by-side figures.

The receiver benchmark compares SQLite with PostgreSQL when TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = (
    ("receiver beside a bare endpoint, 32 in flight, SQLite and PostgreSQL", ["bench_receiver.py", "4000", "32"]),
    ("patient-records: hot window vs suspend at once", ["bench_hot_window.py", "3", "2"]),
    ("emulator: big-bundle stream", ["bench_bigbundle.py", "200"]),
    ("a 1 GB bundle through the dispatcher vs a raw download", ["bench_bundle_path.py", "1000", "20"]),
    ("no idle slots: 200 patients with the hot window held whole vs giving way", ["bench_slots.py", "200"]),
    ("no idle slots, Metriport slower than a process start", ["bench_slots.py", "100", "--delay", "20,40"]),
    ("a cohort under Metriport's rate limits: achieved rate over the limit", ["bench_rate_limit.py", "100"]),
    ("a 1,000-patient cohort: embedded vs scale-out stack", ["bench_scale.py", "1000"]),
)


def main() -> int:
    failed = 0
    for title, (script, *args) in BENCHES:
        print(f"\n== {title}", flush=True)
        failed += subprocess.run([sys.executable, str(HERE / script), *args]).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
