"""Throughput and peak memory of the emulator's big-bundle stream.

Run: .venv/bin/python bench/bench_bigbundle.py [MEGABYTES]   (default 200)
Streams one Bundle of that size into sha256 (no disk), then prints MB/s and the process's peak RSS,
which should stay near the interpreter's baseline whatever the size (the stream is constant-memory).
"""

from __future__ import annotations

import random
import resource
import sys
import time

from metriport_sandbox.bigbundle import bundle_size_hint, measure, stream_bundle
from metriport_sandbox.fhir_data import patient_resources


def main(megabytes: int) -> None:
    resources = patient_resources("0195d964-d166-7226-8912-76934c23c140", "ollie", random.Random(1))
    target = megabytes * 1_000_000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    size, digest = measure(stream_bundle(resources, target))
    elapsed = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert size == bundle_size_hint(resources, target)
    print(f"bundle: {size:,} bytes  sha256 {digest[:16]}...")
    print(f"time:   {elapsed:.2f} s  ({size / 1e6 / elapsed:,.0f} MB/s)")
    print(f"peak RSS: {rss_after / 1024:.1f} MiB (before streaming {rss_before / 1024:.1f} MiB)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
