#!/usr/bin/env bash
# Install the Debian/Ubuntu packages pytest-k8sstate needs on the machine running the `local` provider:
# netfilter and network tools that kube-proxy and the node-state collectors call, and busybox-static
# (the probe client of real-traffic tests, also put into the agnhost workload image); chromium renders the
# HTML report headless in tests/test_report_html_browser.py.
# Idempotent: packages already installed are skipped (no apt-get at all when nothing is missing).
# Non-interactive. Usage: sudo scripts/install-system-deps.sh [--dry-run]
set -euo pipefail

PACKAGES=(iptables nftables ipset conntrack iproute2 ipvsadm jq busybox-static chromium)
APT_TIMEOUT="${APT_TIMEOUT:-900}"
dry_run=0
[[ "${1:-}" == "--dry-run" ]] && dry_run=1

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: this script needs dpkg/apt-get (Debian/Ubuntu); install by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" == "install ok installed" ]]; then
        echo "install-system-deps: $pkg already installed"
    else
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-system-deps: nothing to do"
    exit 0
fi
echo "install-system-deps: installing ${missing[*]}"
if [[ $dry_run -eq 1 ]]; then
    exit 0
fi

sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo -n)
    else
        echo "install-system-deps: run as root (or install sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
timeout "$APT_TIMEOUT" "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
timeout "$APT_TIMEOUT" "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "${missing[@]}"
echo "install-system-deps: done"
