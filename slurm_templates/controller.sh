#!/bin/bash
# microloop campaign controller, rendered by `microloop submit`. Every value below was
# shell-quoted (shlex.quote) when rendered; #SBATCH values were checked against a plain alphabet.
#SBATCH --job-name={{job_name}}
#SBATCH --time={{time_min}}
#SBATCH --cpus-per-task={{cpus}}
#SBATCH --mem={{mem}}
#SBATCH --ntasks=1
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@{{signal_s}}
{{sbatch_lines}}
set -euo pipefail
export PYBAMM_DISABLE_TELEMETRY=true OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
CAMPAIGN_DIR={{campaign_dir}}
# [resources.controller] setup lines (module load, environment), as the user wrote them
{{setup_lines}}
echo "[microloop] controller job ${SLURM_JOB_ID:-?} starts $(date -u +%FT%TZ)" \
     "(restart ${SLURM_RESTART_COUNT:-0})"
child=""
# {{signal_s}} s before the walltime SLURM sends USR1 to this shell: stop the controller (its
# journal is durable), requeue this job (same id, same log, appended) and let it start again at
# once: SLURM holds a requeued job ~120 s, so a detached helper lifts the hold a few seconds
# after the requeue (if the site kills the helper with the job, the hold simply expires).
requeue_self() {
    echo "[microloop] walltime near: stopping the controller and requeueing job $SLURM_JOB_ID"
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" || true
    fi
    setsid nohup bash -c "sleep {{release_delay_s}}; scontrol update JobId=$SLURM_JOB_ID StartTime=now" \
        </dev/null >/dev/null 2>&1 &
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
}
trap requeue_self USR1
# A requeued controller (walltime, node failure, preemption) continues from its journal.
if [ -s "$CAMPAIGN_DIR/journal.jsonl" ]; then
    {{launcher}} resume "$CAMPAIGN_DIR" --quiet &
else
    {{launcher}} run {{campaign}} --dir "$CAMPAIGN_DIR" --quiet {{run_options}} &
fi
child=$!
wait "$child"
