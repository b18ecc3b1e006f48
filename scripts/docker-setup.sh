#!/usr/bin/env bash
# A project-owned Docker engine for restricted machines (opt-in; normal machines use their own docker).
#
#   scripts/docker-setup.sh start    install Debian's docker.io if missing, start dockerd, print DOCKER_HOST
#   scripts/docker-setup.sh stop     remove its containers, stop dockerd, delete its network namespace
#   scripts/docker-setup.sh purge    stop + delete its data root (/var/lib/k8sstate-docker: images, volumes)
#   scripts/docker-setup.sh status   exit 0 when it answers
#   scripts/docker-setup.sh env      print the DOCKER_HOST line to eval
#
# What "project-owned" means (details: docs/kind-on-restricted-machines.md):
#   * dockerd runs in its own network namespace k8ss-docker (nsenter --net): docker0, kind's network, their
#     routes and docker's iptables rules live there; the root namespace's netfilter/routes/addresses are
#     never touched;
#   * own --data-root /var/lib/k8sstate-docker, --exec-root/pidfile/socket under /run/k8sstate-docker;
#     a system docker (if any) is left alone;
#   * if this machine's capability bounding set lacks capabilities (CAP_SYS_RESOURCE here), the default
#     runtime is scripts/oci-runtime-wrapper, which drops them from each container spec before runc runs;
#     without it `docker run --privileged` fails with "unable to apply caps: operation not permitted".
# Installing docker.io never starts the distribution's own docker service: a policy-rc.d that refuses
# service starts is put in place for the install when none exists, and removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-start}
PY=${PYTHON:-python3}

if [ "$(id -u)" != 0 ]; then
    echo "docker-setup: needs root (network namespace, dockerd)" >&2
    exit 1
fi

# apt-get install, with one `apt-get update` and a retry when the package lists are stale or missing
apt_install() {
    local args=(-y -o DPkg::Lock::Timeout=300 --no-install-recommends "$@")
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install "${args[@]}" && return 0
    echo "[docker-setup] apt-get install $* failed; apt-get update and one retry"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get update -q
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install "${args[@]}"
}

install_docker() {
    if command -v dockerd >/dev/null && command -v runc >/dev/null && command -v docker >/dev/null; then
        return
    fi
    echo "[docker-setup] installing docker.io (Debian package)"
    local guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        guard=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# k8sstate docker-setup: do not start services during install\nexit 101\n' >"$guard"
        chmod 755 "$guard"
    fi
    trap '[ -n "$guard" ] && rm -f "$guard"' EXIT
    apt_install docker.io
    if [ -n "$guard" ]; then rm -f "$guard"; fi
    trap - EXIT
}

engine() {
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 300 "$PY" -m pytest_k8sstate.providers.docker.engine "$@"
}

case "$cmd" in
start)
    install_docker
    engine start
    ;;
stop) engine stop ;;
purge) engine stop --purge ;;
status) engine status ;;
env) engine env ;;
*)
    echo "usage: $0 start|stop|purge|status|env" >&2
    exit 2
    ;;
esac
