"""What writing a chunk file costs in memory never touched since boot, in reused memory, and with O_DIRECT.

Usage: python -m bench.bench_page_cache [--size 22M] [--files 10] [--rounds 3] [--touch 0] [--dir DIR]

Each round writes ``--files`` files of ``--size`` bytes, as a container
writes chunks (1 MiB writes, then fdatasync), first through the page cache
(buffered) and then with O_DIRECT (through one page-aligned buffer, no page
cache), deletes them, and prints the rate and the CPU (user and kernel) this
process spent per file. On a virtual machine the first round can be several
times dearer than the next: the page cache takes pages the guest never
touched, and the hypervisor backs each on its first touch. ``--touch N``
first writes N GiB of anonymous memory once and says how long that took, so
that the rounds after it show the cost without that first touch.
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
import tempfile
import time
from pathlib import Path

from bench.common import label, parse_size

WRITE = 1 << 20  # bytes per write call, as the fs backend's buffered pieces
PAGE = 4096


def cpu() -> tuple[float, float]:
    """(user + kernel, kernel) CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_stime


def touch(gib: int) -> float:
    """Write ``gib`` GiB of anonymous memory once, then free it; seconds taken."""
    began = time.perf_counter()
    memory = mmap.mmap(-1, gib << 30)
    block = b"\1" * WRITE
    for offset in range(0, gib << 30, WRITE):
        memory[offset : offset + WRITE] = block
    memory.close()
    return time.perf_counter() - began


def write_buffered(path: Path, data: bytes) -> None:
    """Write ``data`` through the page cache, 1 MiB a call, and fdatasync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        for offset in range(0, len(data), WRITE):
            os.write(fd, view[offset : offset + WRITE])
        os.fdatasync(fd)
    finally:
        os.close(fd)


def write_direct(path: Path, data: bytes, buffer: mmap.mmap) -> None:
    """Write ``data`` with O_DIRECT through the page-aligned ``buffer`` (last block padded, then cut), and fdatasync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    try:
        view = memoryview(data)
        for offset in range(0, len(data), WRITE):
            piece = view[offset : offset + WRITE]
            buffer[: len(piece)] = piece
            padded = -(-len(piece) // PAGE) * PAGE
            os.write(fd, memoryview(buffer)[:padded])
        os.ftruncate(fd, len(data))
        os.fdatasync(fd)
    finally:
        os.close(fd)


def direct_supported(directory: Path) -> bool:
    """Whether files in ``directory`` can be opened with O_DIRECT (tmpfs, for one, refuses)."""
    probe = directory / "direct-probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644))
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="22M", help="bytes per file (a 64 MiB object's chunk with k=3 is ~22 MiB)")
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--touch", type=int, default=0, help="GiB of memory to touch once first")
    parser.add_argument("--dir", default=os.environ.get("BENCH_DIR"), help="where to write (default: a temp dir)")
    args = parser.parse_args()
    size = parse_size(args.size)
    data = os.urandom(size)
    if args.touch:
        seconds = touch(args.touch)
        pages = (args.touch << 30) // PAGE
        print(f"touched {args.touch} GiB of fresh memory in {seconds:.1f} s ({seconds / pages * 1e6:.2f} us a page)")
    print(f"| round | mode | files of {label(size)} | MB/s | CPU ms per file | of which kernel ms |")
    print("|---|---|---|---|---|---|")
    buffer = mmap.mmap(-1, WRITE)
    with tempfile.TemporaryDirectory(prefix="dynobench-", dir=args.dir) as root:
        directory = Path(root)
        modes = ["buffered", "direct"] if direct_supported(directory) else ["buffered"]
        for round_number in range(1, args.rounds + 1):
            for mode in modes:
                (total0, kernel0), began = cpu(), time.perf_counter()
                for i in range(args.files):
                    path = directory / f"{mode}-{i}"
                    if mode == "buffered":
                        write_buffered(path, data)
                    else:
                        write_direct(path, data, buffer)
                elapsed = time.perf_counter() - began
                total1, kernel1 = cpu()
                per_file = 1000 / args.files
                print(
                    f"| {round_number} | {mode} | {args.files} | {args.files * size / elapsed / 1e6:,.0f} "
                    f"| {(total1 - total0) * per_file:.1f} | {(kernel1 - kernel0) * per_file:.1f} |"
                )
                if round_number == 1 and (directory / f"{mode}-0").read_bytes() != data:
                    raise SystemExit(f"The {mode} write did not store the same bytes.")
                for path in directory.iterdir():
                    path.unlink()
        if len(modes) == 1:
            print("(O_DIRECT is not supported in this directory: buffered rows only)")


if __name__ == "__main__":
    main()
