#!/usr/bin/env bash
# Builds kube-apiserver, kubectl, etcd and helm from Go modules (release binaries cannot be downloaded here)
# into a cache keyed on the pinned versions and go.sum files, then prints the directory. A second run with the
# same key builds nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
command -v go >/dev/null || { echo "build.sh: go is not installed (apt-get install golang-go, or Go >= 1.26 from go.dev)" >&2; exit 1; }
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-trimpath
key=$(cat "$here/versions.env" "$here"/*/go.sum | sha256sum | cut -c1-16)
out=${CEPHDR_TESTBED_CACHE:-$HOME/.cache/cephdr-testbed}/bin-$key
if [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ] && [ -x "$out/kubectl" ] && [ -x "$out/helm" ]; then
  echo "$out"; exit 0
fi
mkdir -p "$out.tmp"
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
# Stamp the version the way Kubernetes' own build does; unstamped, /version says v0.0.0 and helm's
# kubeVersion checks fail.
ldf="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  ldf+=" -X $p.gitCommit=go-module-proxy -X $p.buildDate=1970-01-01T00:00:00Z"
done
start=$SECONDS
(cd "$here/etcd" && go build -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3) >&2
(cd "$here/k8s" && go build -ldflags "$ldf" -o "$out.tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl) >&2
hv="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  hv+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
done
(cd "$here/helm" && go build -ldflags "$hv" -o "$out.tmp/helm" helm.sh/helm/v3/cmd/helm) >&2
rm -rf "$out"; mv "$out.tmp" "$out"
echo "build.sh: built control plane in $((SECONDS - start)) s: $(du -sh "$out" | cut -f1)" >&2
echo "$out"
