#!/usr/bin/env bash
# Run recipes from configs/ concurrently on one GPU machine, one process each.
#
#   GENREC_DATA_DIR=../shared/datasets bash benchmarks/gpu_suite.sh TAG configs/ml-1m/*.yaml ...
#
# Each recipe runs `benchmarks/neural.py --config CFG --name NAME-TAG`, which writes
# benchmarks/results/<dataset>/NAME-TAG.json; its log goes to logs/<dataset>-NAME-TAG.log.
# The processes share the GPU and the CPU cores (one thread each), so their fit times are
# those of a shared machine: compare accuracies, not seconds, across these runs.
# Extra `--set` overrides for every run come from $GENREC_SUITE_SET (space-separated).
# $PYTHON (default python3) must import genrec (e.g. .venv/bin/python, or PYTHONPATH=src).
set -u
tag=$1
shift
mkdir -p logs
n=$#
for cfg in "$@"; do
    ds=$(basename "$(dirname "$cfg")")
    name=$(basename "$cfg" .yaml)-$tag
    sets=()
    for s in ${GENREC_SUITE_SET:-}; do sets+=(--set "$s"); done
    OMP_NUM_THREADS=1 "${PYTHON:-python3}" benchmarks/neural.py --config "$cfg" --name "$name" \
        --note "one of $n recipes run concurrently on one GPU ($tag)" "${sets[@]}" \
        >"logs/$ds-$name.log" 2>&1 &
done
wait
grep -h " -> " logs/*-"$tag".log
