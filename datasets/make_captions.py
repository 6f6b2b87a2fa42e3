#!/usr/bin/env python3
"""Make the toy captioned set datasets/captions/mnist-captioned.parquet.

usage: python3 -m pip install pyarrow==26.0.1 numpy && python3 datasets/make_captions.py

A TOY for image-text pretraining (CLIP-style): the 10,000 embedded MNIST test images, each
with a short English caption generated here from its label and from what can be measured in
its pixels -- the digit's name, how heavy its strokes are (ink), how tall it stands (the height
of its bounding box) and which way it leans (the slant of its second moments) -- in one of
several sentence templates. Real captions describe far more; this set only exercises the
paired loading, the two towers and the zero-shot and retrieval metrics on what datasets/ has.

Columns, one row per image in IDX order (row i is record i of
mnist/t10k-images-idx3-ubyte.gz, so the ids of an `idx` ingest of it line up too):
  image    binary, 784 raw u8 pixels (28x28, row-major): ingest with shape = [1, 28, 28]
  caption  string
  digit    string, the class name ("zero" .. "nine")
Written with zstd compression and one row group per 2,000 rows; deterministic (no
randomness: the template is chosen by the record index).
"""
import gzip, os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = [
    "a {ink} handwritten {digit}, {size} and {lean}",
    "the digit {digit}, written {size} with {ink} strokes, {lean}",
    "{size} {digit} in {ink} ink, {lean}",
    "a handwritten number {digit} that is {lean}, {ink} and {size}",
    "{ink} strokes drawing a {size} {digit}, {lean}",
]


def idx(path, dims):
    data = gzip.open(path, "rb").read()
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)


def describe(img):
    """(ink, height, slant) of one 28x28 image."""
    on = img > 127
    ys, xs = np.nonzero(on)
    ink = on.sum()
    height = ys.max() - ys.min() + 1 if len(ys) else 0
    w = img.astype(np.float64)
    yy, xx = np.mgrid[0:28, 0:28]
    m = w.sum()
    cy, cx = (w * yy).sum() / m, (w * xx).sum() / m
    mu11 = (w * (yy - cy) * (xx - cx)).sum() / m
    mu02 = (w * (yy - cy) ** 2).sum() / m
    # Image rows grow downwards: a positive covariance leans the top to the left.
    return ink, height, -mu11 / mu02


def tertiles(v):
    lo, hi = np.quantile(v, [1 / 3, 2 / 3])
    return np.where(v < lo, 0, np.where(v < hi, 1, 2))


def main():
    images = idx(os.path.join(HERE, "mnist/t10k-images-idx3-ubyte.gz"), 3).reshape(-1, 28, 28)
    labels = idx(os.path.join(HERE, "mnist/t10k-labels-idx1-ubyte.gz"), 1)
    feats = np.array([describe(im) for im in images])
    ink = tertiles(feats[:, 0])
    size = tertiles(feats[:, 1])
    slant = feats[:, 2]
    words = {
        "ink": ["thin", "medium", "bold"],
        "size": ["short", "mid-sized", "tall"],
    }
    captions = []
    for i, (lab, k, s, sl) in enumerate(zip(labels, ink, size, slant)):
        lean = "leaning right" if sl > 0.15 else "leaning left" if sl < -0.15 else "upright"
        captions.append(
            TEMPLATES[i % len(TEMPLATES)].format(
                digit=NAMES[lab], ink=words["ink"][k], size=words["size"][s], lean=lean
            )
        )
    table = pa.table(
        {
            "image": pa.array([im.tobytes() for im in images], type=pa.binary()),
            "caption": pa.array(captions, type=pa.string()),
            "digit": pa.array([NAMES[l] for l in labels], type=pa.string()),
        }
    )
    out = os.path.join(HERE, "captions", "mnist-captioned.parquet")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    pq.write_table(table, out, compression="zstd", row_group_size=2000)
    print(f"{out}: {len(captions)} rows, {os.path.getsize(out)} bytes")
    for c in captions[:5]:
        print("  ", c)


if __name__ == "__main__":
    main()
