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
# Only recipes whose model trains (has a `train` section): a glob like configs/ml-1m/*.yaml
# also matches the classic recipes (ease, itemknn), which benchmarks/baselines.py runs.
recipes=()
for cfg in "$@"; do
    "${PYTHON:-python3}" -c "import sys; from genrec.config import load_config; \
sys.exit(0 if 'train' in type(load_config(sys.argv[1]).models[0]).model_fields else 3)" \
        "$cfg"
    case $? in
        0) recipes+=("$cfg") ;;
        3) echo "skipping $cfg: its model does not train (not a neural recipe)" ;;
        *) echo "error: $cfg is not a valid config (see above)" >&2; exit 2 ;;
    esac
done
n=${#recipes[@]}
for cfg in "${recipes[@]}"; do
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
