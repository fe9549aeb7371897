#!/usr/bin/env bash
# Local end-to-end check of the Ray Jobs path: start a single-node Ray head, submit a short
# training run with cluster/runtime_env.yaml, wait until it SUCCEEDED, stop the head.
#
#   cluster/submit.sh                      # default: 2 iterations of the SSM model on navigation-2d
#   cluster/submit.sh -- python -c 'import ray; ray.init(); print(ray.cluster_resources())'
#
# Environment (all optional):
#   RAY_AUTH_MODE   token (default) or disabled; exported, so the head, the CLI and the job agree
#   NUM_CPUS=2  ITERATIONS=2  NUM_WORKERS=(unset: CLI default)  TIMEOUT_S=900  JOB_ID=...
#   OUTPUT_DIR=runs/<JOB_ID>  LOG_DIR=runs (head log)
#   RAY_PORT=6379  DASHBOARD_PORT=8265  CLIENT_PORT=10001  AGENT_PORT=52365   (change them to run
#   next to another local Ray cluster)
#   TEMP_DIR=/tmp/ray-submit-<pid>   the head's own Ray temp dir (removed after a job that SUCCEEDED;
#   kept, with the session logs, otherwise). Private on purpose: the job supervisor resolves the
#   driver's RAY_ADDRESS from <temp dir>/ray_current_cluster, falling back to *any* GCS process on
#   the machine; in the shared /tmp/ray a job could attach to another local cluster.
#
# The head runs as `ray start --block` in the background and is stopped by signalling that one
# process, so other Ray clusters of the same user survive (`ray stop` would kill them all).
set -euo pipefail

cd "$(dirname "$0")/.."   # repository root: runtime_env working_dir "." is relative to it

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
export RAY_USAGE_STATS_ENABLED=0
NUM_CPUS="${NUM_CPUS:-2}"
ITERATIONS="${ITERATIONS:-2}"
NUM_WORKERS="${NUM_WORKERS:-}"
TIMEOUT_S="${TIMEOUT_S:-900}"
RAY_PORT="${RAY_PORT:-6379}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8265}"
CLIENT_PORT="${CLIENT_PORT:-10001}"
AGENT_PORT="${AGENT_PORT:-52365}"
JOB_ID="${JOB_ID:-ssm-metarl-smoke-$(date +%Y%m%d-%H%M%S)-$$}"
OUTPUT_DIR="${OUTPUT_DIR:-$PWD/runs/$JOB_ID}"
OWN_TEMP_DIR=0; [ -z "${TEMP_DIR:-}" ] && OWN_TEMP_DIR=1
TEMP_DIR="${TEMP_DIR:-/tmp/ray-submit-$$}"   # short: Ray's unix socket paths live under it (<= 107 chars)
ADDRESS="http://127.0.0.1:${DASHBOARD_PORT}"
export RAY_API_SERVER_ADDRESS="$ADDRESS"

if [ "$#" -gt 0 ]; then
    [ "$1" = "--" ] && shift
    ENTRYPOINT=("$@")
else
    # Small sizes so the smoke run takes about a minute on 2 CPUs. Absolute output path: the job's
    # cwd is the uploaded copy of the working_dir.
    ENTRYPOINT=(python -m ssm_metarl_ray train --env navigation-2d --model ssm
        --iterations "$ITERATIONS" --meta-batch-size 2 --episodes-per-task 3 --num-test-tasks 2
        --output-dir "$OUTPUT_DIR")
    if [ -n "$NUM_WORKERS" ]; then
        ENTRYPOINT+=(--num-workers "$NUM_WORKERS")
    fi
fi

if [ "$RAY_AUTH_MODE" = "token" ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ]; then
    ray get-auth-token --generate >/dev/null   # creates ~/.ray/auth_token once; head and CLI share it
fi

LOG_DIR="${LOG_DIR:-runs}"
mkdir -p "$LOG_DIR"
HEAD_LOG="$LOG_DIR/${JOB_ID}.head.log"
echo "[submit.sh] RAY_AUTH_MODE=$RAY_AUTH_MODE; starting Ray head (log: $HEAD_LOG)"
rm -f "$TEMP_DIR/ray_current_cluster"   # a kept dir of an earlier run with this pid must not look "up"
ray start --head --block \
    --num-cpus="$NUM_CPUS" \
    --port="$RAY_PORT" \
    --include-dashboard=true --dashboard-port="$DASHBOARD_PORT" \
    --ray-client-server-port="$CLIENT_PORT" \
    --dashboard-agent-listen-port="$AGENT_PORT" \
    --temp-dir="$TEMP_DIR" \
    --disable-usage-stats >"$HEAD_LOG" 2>&1 &
HEAD_PID=$!

cleanup() {
    local rc=$?
    if kill -0 "$HEAD_PID" 2>/dev/null; then
        echo "[submit.sh] stopping Ray head (pid $HEAD_PID)"
        kill -TERM "$HEAD_PID" 2>/dev/null || true
        wait "$HEAD_PID" 2>/dev/null || true
    fi
    if [ "$rc" -eq 0 ] && [ "$OWN_TEMP_DIR" = 1 ]; then
        rm -rf "$TEMP_DIR"
    else
        echo "[submit.sh] Ray session logs: $TEMP_DIR/session_latest/logs"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Up = the dashboard answers and `ray start` has recorded its GCS address in its temp dir (written
# last; the job supervisor reads it to give the driver RAY_ADDRESS).
deadline=$((SECONDS + 120))
until [ -s "$TEMP_DIR/ray_current_cluster" ] && ray job list --address "$ADDRESS" >/dev/null 2>&1; do
    if ! kill -0 "$HEAD_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        echo "[submit.sh] Ray head did not come up; last log lines:" >&2
        tail -n 30 "$HEAD_LOG" >&2 || true
        exit 1
    fi
    sleep 2
done

echo "[submit.sh] submitting job $JOB_ID: ${ENTRYPOINT[*]}"
ray job submit --address "$ADDRESS" --submission-id "$JOB_ID" \
    --runtime-env cluster/runtime_env.yaml --entrypoint-num-cpus 0 --no-wait \
    -- "${ENTRYPOINT[@]}"

# Stream the driver's output until the job ends (bounded by TIMEOUT_S), then read its final state.
timeout "$TIMEOUT_S" ray job logs --address "$ADDRESS" --follow "$JOB_ID" || true

# `ray job status` prints a different sentence per state; the SDK returns the state name.
job_status() {
    python - "$ADDRESS" "$JOB_ID" <<'PY'
import sys
from ray.job_submission import JobSubmissionClient
print(JobSubmissionClient(sys.argv[1]).get_job_status(sys.argv[2]).value)
PY
}

status=""
deadline=$((SECONDS + 60))
while :; do
    status="$(job_status || true)"
    case "$status" in
        SUCCEEDED | FAILED | STOPPED) break ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "[submit.sh] job $JOB_ID still '${status:-unknown}' after the timeout; stopping it" >&2
        ray job stop --address "$ADDRESS" "$JOB_ID" >/dev/null 2>&1 || true
        exit 1
    fi
    sleep 2
done

echo "[submit.sh] job $JOB_ID finished: $status"
[ "$status" = "SUCCEEDED" ]
