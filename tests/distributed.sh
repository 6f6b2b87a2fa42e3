#!/usr/bin/env bash
# The data-parallel tests (tests/e2e/distributed.rs): `mpirun -np 2` on a pretext built with
# the `mpi` feature, against single processes. They need an MPI and libclang (the `mpi`
# crate generates its bindings from the MPI headers): on Debian or Ubuntu
#   apt install openmpi-bin libopenmpi-dev libclang-dev
# Without them this script says so and exits 0, unless PRETEXT_REQUIRE_MPI=1 (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null; then
  echo "distributed tests skipped: no MPI found (apt install openmpi-bin libopenmpi-dev libclang-dev)" >&2
  [ -z "${PRETEXT_REQUIRE_MPI:-}" ] || exit 1
  exit 0
fi
echo "== data-parallel tests (mpirun -np 2, $(mpirun --version 2>/dev/null | head -1))"
cargo build -p pretext --locked --features mpi
cargo test -p pretext-tests --locked --features mpi --test e2e distributed
