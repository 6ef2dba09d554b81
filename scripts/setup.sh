#!/usr/bin/env bash
# Installs what cephdr's tests and demo need, idempotently: Debian's Ceph packages, and the control plane
# (kube-apiserver, etcd, kubectl, helm) built from Go modules into a cache. Safe to run again: it does
# nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(ceph-mon ceph-mgr ceph-osd radosgw rbd-mirror ceph-common uuid-runtime python3-rbd python3-rados)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    echo "setup: missing Debian packages ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2; exit 1
  fi
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for tool in cargo go; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is not installed (Rust via rustup, Go >= 1.26)" >&2; exit 1; }
done
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[ "$go_minor" -ge 26 ] || { echo "setup: Go $(go env GOVERSION) is too old: Kubernetes v1.36 needs Go >= 1.26" >&2; exit 1; }

# Prints the directory of the control-plane binaries; cached by version, so later runs return at once.
bash e2e/controlplane/build.sh
