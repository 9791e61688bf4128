#!/usr/bin/env bash
# Builds the tests' Kubernetes control plane (kube-apiserver, kube-controller-manager and
# etcd) and the cluster DNS (CoreDNS with its kubernetes plugin) from the Go module proxy into $OPNAME_CONTROLPLANE, skipping binaries that
# are already there. Test infrastructure only: the product stays Rust.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OPNAME_CONTROLPLANE:-/opt/opname-controlplane/k8s-v1.37.2-etcd-v3.6.16}"
mkdir -p "$out"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
# The compile cache (about 4 GiB) is worth nothing once the binaries exist: keep it off the disk.
GOCACHE="$(mktemp -d)"
export GOCACHE
trap 'chmod -R u+w "$GOCACHE" 2>/dev/null; rm -rf "$GOCACHE"' EXIT
kube=()
for b in kube-apiserver kube-controller-manager; do
  [ -x "$out/$b" ] || kube+=("k8s.io/kubernetes/cmd/$b")
done
if [ ${#kube[@]} -gt 0 ]; then
  echo "building ${kube[*]} into $out"
  v=k8s.io/component-base/version
  (cd "$here/kube" && go build -trimpath -o "$out/" \
    -ldflags="-s -X $v.gitVersion=v1.37.2 -X $v.gitMajor=1 -X $v.gitMinor=37 -X $v.gitTreeState=clean" \
    "${kube[@]}")
fi
if [ ! -x "$out/etcd" ]; then
  echo "building etcd into $out"
  (cd "$here/etcd" && go build -trimpath -ldflags=-s -o "$out/etcd" go.etcd.io/etcd/server/v3)
fi
if [ ! -x "$out/coredns" ]; then
  echo "building coredns into $out"
  (cd "$here/coredns" && go build -trimpath -ldflags=-s -o "$out/coredns" .)
fi
