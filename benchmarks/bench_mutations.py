"""Mutation benchmark: 10,000 hostile .dcz files, each must decode or raise a FormatError.

Run from the repository root: ``nice .venv/bin/python -m benchmarks.bench_mutations [--files N]``.
Splits the files equally among the mutators of ``benchmarks/mutations.py`` (seeded, over the base
files) and decodes each (``read_info``, then ``decode_model``) twice: for its CPU time, then under
tracemalloc for its peak, each under a 10 s alarm. Prints each mutator's outcomes, the slowest
file, the largest peak, and the largest peak beyond the decoded tensors per byte of file (files
of 16 KiB or more). ``--check`` exits 1 on an uncaught error, a hang, or a peak above the stated
bound (decoded tensors + 1024 x file + 4 MiB; docs/FORMAT.md, Decoder memory).
"""

from __future__ import annotations

import argparse
import collections
import math
import signal
import sys
import time
import tracemalloc
from dataclasses import dataclass, field

import numpy as np

from benchmarks.mutation_bases import BASE_FILES
from benchmarks.mutations import MUTATORS, SEED, outcome
from deepcompression.format.container import FormatError, read_info

HANG_SECONDS = 10
BOUND_PER_FILE_BYTE = 1024
BOUND_SLACK = 4 * 2**20
MIN_RATIO_BYTES = 16384
"""Files shorter than this are left out of the peak-per-file-byte maximum (constant costs)."""


class Hang(Exception):
    """A file took longer than HANG_SECONDS to decode."""


@dataclass
class Tally:
    """Outcome counts and the worst time and memory seen, with the mutator that caused each."""

    outcomes: dict[str, collections.Counter] = field(default_factory=dict)
    slowest: tuple[float, str] = (0.0, "")
    largest: tuple[int, str] = (0, "")
    excess_ratio: tuple[float, str] = (0.0, "")
    over_bound: int = 0


def output_bytes(data: bytes) -> int:
    """Bytes of the tensors (and compacted sub-tensors) a file declares; 0 if it is refused."""
    try:
        layers = read_info(data).layers
    except FormatError:
        return 0
    compacted = sum(
        4 * math.prod(layer.units) * math.prod(layer.shape[2:])
        for layer in layers
        if layer.units is not None
    )
    return sum(layer.decoded_bytes for layer in layers) + compacted


def guarded(data: bytes) -> str:
    """The outcome of decoding one file under a HANG_SECONDS alarm; uncaught errors included."""
    signal.alarm(HANG_SECONDS)
    try:
        return outcome(data)
    except Hang:
        return "HANG"
    except Exception as err:  # anything but a FormatError is a bug; count it
        return f"UNCAUGHT {type(err).__name__}"
    finally:
        signal.alarm(0)


def measure(data: bytes) -> tuple[str, float, int]:
    """(outcome, CPU seconds untraced, traced peak bytes) of decoding one file twice."""
    start = time.process_time()
    result = guarded(data)
    seconds = time.process_time() - start
    tracemalloc.start()
    try:
        traced = guarded(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result if traced == result else f"{result} / traced {traced}", seconds, peak


def run(files: int) -> Tally:
    """Decode ``files`` mutated files, equal shares per mutator, and tally the results."""
    tally = Tally()
    names = sorted(MUTATORS)
    for index, name in enumerate(names):
        rng = np.random.default_rng([SEED, 1000 + index])
        counts = tally.outcomes.setdefault(name, collections.Counter())
        for case in range(files // len(names) + (index < files % len(names))):
            data = MUTATORS[name](BASE_FILES[case % len(BASE_FILES)], rng)
            output = output_bytes(data)
            result, seconds, peak = measure(data)
            counts[result] += 1
            where = f"{name} case {case} ({len(data)} B, {result})"
            tally.slowest = max(tally.slowest, (seconds, where))
            tally.largest = max(tally.largest, (peak, where))
            if len(data) >= MIN_RATIO_BYTES:
                tally.excess_ratio = max(tally.excess_ratio, ((peak - output) / len(data), where))
            tally.over_bound += peak > output + BOUND_PER_FILE_BYTE * len(data) + BOUND_SLACK
    return tally


def report(tally: Tally) -> int:
    """Print the tally; return the number of uncaught errors and hangs."""
    total: collections.Counter = collections.Counter()
    for name, counts in tally.outcomes.items():
        total.update(counts)
        print(f"{name:22s} {sum(counts.values()):6d}  " + ", ".join(
            f"{kind} {count}" for kind, count in counts.most_common()
        ))  # fmt: skip
    bad = sum(count for kind, count in total.items() if kind.startswith(("UNCAUGHT", "HANG")))
    print(f"{'all':22s} {sum(total.values()):6d}  " + ", ".join(
        f"{kind} {count}" for kind, count in total.most_common()
    ))  # fmt: skip
    print(f"uncaught errors and hangs: {bad}")
    print(f"slowest file: {tally.slowest[0]:.3f} s of CPU (untraced), {tally.slowest[1]}")
    print(f"largest traced peak: {tally.largest[0] / 2**20:.1f} MiB, {tally.largest[1]}")
    print(
        f"largest peak beyond the decoded tensors, files of 16 KiB or more: "
        f"{tally.excess_ratio[0]:.0f} x the file, "
        f"{tally.excess_ratio[1]}"
    )
    print(f"files over decoded + {BOUND_PER_FILE_BYTE} x file + 4 MiB: {tally.over_bound}")
    return bad


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; with --check, exit 1 on an uncaught error, a hang or a bound broken."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"no result after {HANG_SECONDS} s")

    signal.signal(signal.SIGALRM, on_alarm)
    start = time.perf_counter()
    tally = run(args.files)
    bad = report(tally)
    print(f"{args.files} files, each decoded twice, in {time.perf_counter() - start:.0f} s")
    return 1 if args.check and (bad or tally.over_bound) else 0


if __name__ == "__main__":
    sys.exit(main())
