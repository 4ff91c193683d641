#!/usr/bin/env bash
# Run the MPS-CLIP ablation ladder (docs/reports.md, "Ablation studies") on the embedded datasets.
#
#   bash scripts/make_ablation_report.sh     # SEEDS=0,1,2, DATASETS="synthetic-rs synthetic-rs-fine"
#
# The runs go into the registry of $RSITR_BENCH_HOME (make_example_report.sh sets it; without it, a fresh
# temporary one). Each study prints its table; `rsitr-bench report` renders them with the rest. Rerunning with
# the same RSITR_BENCH_HOME continues: finished rows are skipped, an interrupted row continues.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
SEEDS=${SEEDS:-0,1,2}
DATASETS=${DATASETS:-synthetic-rs synthetic-rs-fine}
export RSITR_BENCH_HOME=${RSITR_BENCH_HOME:-$(mktemp -d)}
for dataset in $DATASETS; do
    rsitr-bench ablate --method mps-clip --dataset "$dataset" --seeds "$SEEDS" --no-progress
done
echo "ablation runs in the registry $RSITR_BENCH_HOME/runs"
