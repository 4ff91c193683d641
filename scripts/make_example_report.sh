#!/usr/bin/env bash
# Regenerate the committed example report in reports/: the leaderboard of the embedded default (synthetic-rs)
# and the MPS-CLIP ablation tables of synthetic-rs and synthetic-rs-fine (scripts/make_ablation_report.sh),
# in reports/out (everything) and reports/ablation/<dataset> (each ablation table alone).
#
#   bash scripts/make_example_report.sh            # SEEDS=0,1,2 by default
#
# Every run goes into a fresh, temporary registry, so the report shows exactly these runs. If the ablations are
# interrupted, `RSITR_BENCH_HOME=<the printed registry's parent> bash scripts/make_example_report.sh` continues
# them (finished rows are skipped; the leaderboard methods run again, and the report shows the newest run of each).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
SEEDS=${SEEDS:-0,1,2}
export DATASETS=${DATASETS:-synthetic-rs synthetic-rs-fine}  # the ablation studies, run and rendered
export RSITR_BENCH_HOME=${RSITR_BENCH_HOME:-$(mktemp -d)}
echo "registry: $RSITR_BENCH_HOME/runs"
for method in global-clip full-ft mps-clip mps-clip-leaky-protocol; do
    rsitr-bench run --method "$method" --seeds "$SEEDS" --no-progress
done
SEEDS=$SEEDS bash scripts/make_ablation_report.sh
rm -rf reports/out
rsitr-bench report --format all --out reports/out
for dataset in $DATASETS; do
    rm -rf "reports/ablation/$dataset"
    rsitr-bench report --ablation "mps-clip-$dataset" --format md,json --out "reports/ablation/$dataset"
done
echo "registry: $RSITR_BENCH_HOME/runs; report: reports/out"
