#!/bin/bash
# microloop campaign controller, rendered by `microloop submit`. Every value below was
# shell-quoted (shlex.quote) when rendered; #SBATCH values were checked against a plain alphabet.
#SBATCH --job-name={{job_name}}
#SBATCH --time={{time_min}}
#SBATCH --cpus-per-task={{cpus}}
#SBATCH --mem={{mem}}
#SBATCH --ntasks=1
#SBATCH --requeue
{{sbatch_lines}}
set -euo pipefail
export PYBAMM_DISABLE_TELEMETRY=true OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
CAMPAIGN_DIR={{campaign_dir}}
# A requeued controller (node failure, preemption) continues from its journal.
if [ -s "$CAMPAIGN_DIR/journal.jsonl" ]; then
    exec {{launcher}} resume "$CAMPAIGN_DIR" --quiet
else
    exec {{launcher}} run {{campaign}} --dir "$CAMPAIGN_DIR" --quiet {{run_options}}
fi
