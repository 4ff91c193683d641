#!/usr/bin/env bash
# Regenerate the committed example leaderboard in reports/ for the embedded default (synthetic-rs).
#
#   bash scripts/make_example_report.sh            # SEEDS=0,1,2 by default
#
# Every run goes into a fresh, temporary registry, so the report shows exactly these runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
SEEDS=${SEEDS:-0,1,2}
export RSITR_BENCH_HOME=${RSITR_BENCH_HOME:-$(mktemp -d)}
for method in global-clip full-ft mps-clip mps-clip-leaky-protocol; do
    rsitr-bench run --method "$method" --seeds "$SEEDS" --no-progress
done
rm -rf reports/out
rsitr-bench report --dataset synthetic-rs --format all --out reports/out
echo "registry: $RSITR_BENCH_HOME/runs; report: reports/out"
