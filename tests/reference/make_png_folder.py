#!/usr/bin/env python3
"""Write a folder of N small grayscale PNGs in class sub-folders, for memory measurements.

    python3 tests/reference/make_png_folder.py /tmp/png1m 1000000 [--size 32] [--classes 10]

Files are `<root>/class<k>/<i>.png`; image `i` is in class `i % classes` and its pixels are a
class-dependent gradient plus noise seeded by `i`, so the folder is the same on every run and
a model can learn something from it. Only the standard library is used (PNG written by hand
with zlib); files are written by one process per core. Check free space first (`df -h`):
a 32×32 file is ~1.1 kB of data but takes a whole file-system block (4 kB on ext4).
"""

import argparse
import operator
import os
import random
import struct
import zlib
from multiprocessing import Pool


def png(width, height, rows):
    """A minimal 8-bit grayscale PNG from `rows` (bytes, one per row)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


_BASES = {}
_LOW6 = bytes(b & 63 for b in range(256))


def image(i, size, classes):
    k = i % classes
    base = _BASES.get((k, size))
    if base is None:
        # Class k: a gradient in one of `classes` directions, at most 191 (noise adds < 64).
        base = bytes(
            (x * (k % 4) + y * (k // 4 + 1)) * 191 // (size * 8)
            for y in range(size)
            for x in range(size)
        )
        _BASES[(k, size)] = base
    noise = random.Random(i).randbytes(size * size).translate(_LOW6)
    pixels = bytes(map(operator.add, base, noise))
    return png(size, size, [pixels[y * size : (y + 1) * size] for y in range(size)])


def work(args):
    root, start, end, size, classes = args
    for i in range(start, end):
        path = os.path.join(root, f"class{i % classes}", f"{i:07d}.png")
        with open(path, "wb") as f:
            f.write(image(i, size, classes))
    return end - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("count", type=int)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    for k in range(a.classes):
        os.makedirs(os.path.join(a.root, f"class{k}"), exist_ok=True)
    step = 10_000
    tasks = [
        (a.root, s, min(s + step, a.count), a.size, a.classes)
        for s in range(0, a.count, step)
    ]
    done = 0
    with Pool(a.jobs) as pool:
        for n in pool.imap_unordered(work, tasks):
            done += n
            if done % 100_000 < step:
                print(f"{done} files", flush=True)
    print(f"wrote {done} images to {a.root}")


if __name__ == "__main__":
    main()
