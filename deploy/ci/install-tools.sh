#!/bin/sh
# Installs what `make deploy-check` needs on a fresh Debian machine: podman with the runc
# runtime (crun refuses some cgroup set-ups), debootstrap for the base images, and
# podman-compose (from the project's dev extra, in .venv). Idempotent: installs only what is
# missing.
set -eu
missing=""
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
# Named because Debian may leave them out: netavark with aardvark-dns gives containers of one
# compose network each other's names (the CNI backend without dnsname does not); netavark
# sets up bridge NAT and port publishing with iptables, which it does not depend on.
for pkg in uidmap slirp4netns fuse-overlayfs netavark aardvark-dns iptables; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "installing Debian packages:$missing"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
