#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info` and `docker-compose` exists (the compose
# deployment and its test). Idempotent and fast when both do. Otherwise installs Debian's
# docker.io / docker-compose when missing (needs root and apt), starts dockerd in the
# background (log: /var/log/dockerd.log) and waits up to 60 s.
set -euo pipefail

WAIT_SECONDS="${CODERX_DOCKER_WAIT:-60}"
LOG=/var/log/dockerd.log

docker_ok() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }
die() { printf 'ensure-docker: %s\n' "$*" >&2; exit 1; }
dockerd_running() {
    if command -v pgrep >/dev/null 2>&1; then pgrep -x dockerd >/dev/null 2>&1; return; fi
    [[ -s /var/run/docker.pid ]] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null
}

if ! command -v docker-compose >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] \
        && command -v apt-get >/dev/null 2>&1; then
    printf 'ensure-docker: installing docker-compose with apt-get\n' >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends docker-compose >/dev/null \
        || die "apt-get install docker-compose failed"
fi

docker_ok && exit 0

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "Docker is not installed and installing it needs root (apt-get install docker.io)"
    command -v apt-get >/dev/null 2>&1 || die "Docker is not installed and apt-get is unavailable: install Docker first"
    printf 'ensure-docker: installing docker.io with apt-get\n' >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # apparmor: on kernels with AppArmor, dockerd needs apparmor_parser to start containers.
    apt-get install -y -qq --no-install-recommends docker.io apparmor ca-certificates >/dev/null \
        || die "apt-get install docker.io failed"
fi

# Start dockerd unless one is already running (perhaps still starting up).
if ! dockerd_running; then
    [[ $(id -u) -eq 0 ]] || die "the Docker engine is not running and starting dockerd needs root"
    mkdir -p "$(dirname "$LOG")"
    printf 'ensure-docker: starting dockerd (log: %s)\n' "$LOG" >&2
    nohup dockerd >>"$LOG" 2>&1 </dev/null &
    disown || true
fi

for ((i = 0; i < WAIT_SECONDS; i++)); do
    docker_ok && exit 0
    sleep 1
done
die "the Docker engine did not answer \`docker info\` within ${WAIT_SECONDS}s (see $LOG)"
