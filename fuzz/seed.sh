#!/bin/sh
# Seed corpora for the fuzz targets, from files in the repository.
set -e
cd "$(dirname "$0")"
mkdir -p corpus/pipeline_parse corpus/idx_parse corpus/parquet_ingest corpus/plugin_params
cp ../tests/golden/broken/*.toml ../tests/golden/valid/*.toml ../pipelines/*.toml corpus/pipeline_parse/ 2>/dev/null || true
for f in ../datasets/mnist/*.gz; do
  gzip -dc "$f" | head -c 2048 > "corpus/idx_parse/$(basename "$f" .gz)"
done
cp ../tests/fixtures/data/*.parquet corpus/parquet_ingest/
printf '{"temperature": 0.5, "name": "x", "flag": true, "scale": [0.4, 1.0]}' > corpus/plugin_params/basic.json
printf '{"n": 18446744073709551615, "f": 1e308, "l": [1, -2.5e-300]}' > corpus/plugin_params/edges.json
