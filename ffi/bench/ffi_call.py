"""The cost of one FFI call round trip, seen from Python (ctypes, as the
generated bindings make it): median over batches of calls, in microseconds.

Run by ffi/bench/run, which builds the library and generates the module."""

import statistics
import sys
import tempfile
import time

import karmyq_ffi as k

BATCH = 20_000
BATCHES = 25


def per_call_us(f):
    samples = []
    for _ in range(BATCHES):
        start = time.perf_counter_ns()
        for _ in range(BATCH):
            f()
        samples.append((time.perf_counter_ns() - start) / BATCH / 1000)
    return statistics.median(samples), min(samples), max(samples)


def main():
    with tempfile.TemporaryDirectory() as d:
        client = k.KarmyqClient.open(d)
        cid = client.create_community("Bench Street", "", k.Visibility.PUBLIC)

        def python_only():
            return None

        rows = [
            ("a Python function call (baseline)", python_only),
            ("karmyq_version(): free function, string back", k.karmyq_version),
            ("client.now(): method, integer back", client.now),
            ("client.member_id(): method, id string back", client.member_id),
            ("client.community_info(id): id in, record back, SQLite read",
             lambda: client.community_info(cid)),
        ]
        print(f"{'call':<62} {'median µs':>10} {'min':>7} {'max':>7}")
        for name, f in rows:
            med, lo, hi = per_call_us(f)
            print(f"{name:<62} {med:>10.2f} {lo:>7.2f} {hi:>7.2f}")
        client.close()


if __name__ == "__main__":
    sys.exit(main())
