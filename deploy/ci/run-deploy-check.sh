#!/usr/bin/env bash
# `make deploy-check` as CI runs it (.ci/run, after `make test`): bounded in time, and its
# containers, network and volumes removed on every exit (pass, failure, timeout, Ctrl-C, TERM).
#
# The check publishes host ports from 26000-26999 only (never 5672/5432, never the test
# servers' 20000-24499), so it may share the machine with its RabbitMQ and PostgreSQL and with
# another test run; it never stops, restarts or reconfigures them. DEPLOY_CHECK_TIMEOUT seconds
# (default 2700) bound it: a cold run building every image took 17 min under a load average of
# 18 here, a warm one about 4; the check's own --budget (2400 s) stops it with a teardown first.
set -euo pipefail
cd "$(dirname "$0")/../.."

DEPLOY_CHECK_TIMEOUT="${DEPLOY_CHECK_TIMEOUT:-2700}"
check_pid=""
check_started=""

# Stops the check (its own process group: `timeout` makes one) and lets it tear its stack down;
# then `deploy_check.py --down` removes whatever is left of the newsletter-ci project, unless
# another run's check holds the machine-wide lock (that stack is not ours).
stop_check() {
  if [ -n "$check_pid" ] && kill -0 "$check_pid" 2>/dev/null; then
    echo "run-deploy-check: stopping make deploy-check (it tears its stack down first)" >&2
    kill -TERM -- "-$check_pid" 2>/dev/null || kill -TERM "$check_pid" 2>/dev/null || true
    wait "$check_pid" 2>/dev/null || true
  fi
}
clean_up() {
  local status=$?
  trap - EXIT
  trap '' INT TERM HUP  # the cleanup runs to its end
  stop_check
  if [ -n "$check_started" ]; then
    .venv/bin/python deploy/ci/deploy_check.py --down || echo "run-deploy-check: deploy-check cleanup failed; see 'podman ps -a --filter label=com.docker.compose.project=newsletter-ci'" >&2
  fi
  exit "$status"
}
trap clean_up EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

echo "run-deploy-check: make deploy-check (at most ${DEPLOY_CHECK_TIMEOUT}s)"
# In the background so that a Ctrl-C or a TERM reaches this script's traps while it waits;
# timeout sends TERM to the whole group at the limit and KILL 120 s later.
check_started=1
timeout --kill-after=120 "$DEPLOY_CHECK_TIMEOUT" make deploy-check &
check_pid=$!
set +e
wait "$check_pid"
rc=$?
set -e
check_pid=""
case "$rc" in
  0) echo "run-deploy-check: deploy-check passed" ;;
  124) echo "run-deploy-check: deploy-check FAILED: still running after ${DEPLOY_CHECK_TIMEOUT}s (DEPLOY_CHECK_TIMEOUT), stopped" >&2 ;;
  137) echo "run-deploy-check: deploy-check FAILED: killed after not stopping within 120s of the timeout" >&2 ;;
  *) echo "run-deploy-check: deploy-check FAILED (exit $rc); its output above says at which step" >&2 ;;
esac
exit "$rc"
