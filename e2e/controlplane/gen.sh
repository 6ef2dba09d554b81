#!/usr/bin/env bash
# Regenerates the Go modules that build the test bed's control plane (run only to bump versions).
# k8s.io/kubernetes requires its staging modules at v0.0.0 and maps them to ./staging in its own repo only,
# so a consumer must replace each with the published v0.X.Y of the same release.
set -euo pipefail
source "$(dirname "$0")/versions.env"
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
here=$(cd "$(dirname "$0")" && pwd)
gomod=$(cd /tmp && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
cd "$here/k8s"
[ -f go.mod ] || go mod init cephdr.invalid/e2e/controlplane/k8s
go mod edit -go=1.26.0
for m in $(sed -n 's|^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*|\1|p' "$gomod"); do
  go mod edit "-replace=$m=$m@v0.${K8S_VERSION#v1.}"
done
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION"
go mod tidy
cd "$here/etcd"
[ -f go.mod ] || go mod init cephdr.invalid/e2e/controlplane/etcd
go mod edit -go=1.26.0
go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
go mod tidy
cd "$here/helm"
[ -f go.mod ] || go mod init cephdr.invalid/e2e/controlplane/helm
go mod edit -go=1.26.0
go get -tool "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
go mod tidy
