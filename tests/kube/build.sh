#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and etcd from the Go modules
# pinned in tests/kube/go.mod and caches them in
#   ${TENANTDB_KUBE_CACHE:-$HOME/.cache/tenantdb/kube}/<kube version>-<etcd version>/
# Binaries already present there are reused. The last line on stdout is the
# absolute path of that directory; everything else goes to stderr.
#
# Environment:
#   TENANTDB_KUBE_CACHE       cache root (default: $HOME/.cache/tenantdb/kube)
#   TENANTDB_KUBE_BUILD_JOBS  go build -p N (default: number of cores)
#   TENANTDB_KUBE_REBUILD=1   ignore cached binaries and rebuild
#
# Needs only Go (>= the go directive in go.mod; older toolchains fetch a newer
# one via GOTOOLCHAIN=auto) and a reachable module proxy. CGO is disabled, so
# no C toolchain is needed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

log() { printf 'tests/kube/build.sh: %s\n' "$*" >&2; }

command -v go >/dev/null 2>&1 || { log "go not found in PATH"; exit 1; }

# Module versions come from go.mod (no download needed for `go list -m`).
kube_version="$(go list -mod=readonly -m -f '{{.Version}}' k8s.io/kubernetes)"
etcd_version="$(go list -mod=readonly -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"

cache_root="${TENANTDB_KUBE_CACHE:-$HOME/.cache/tenantdb/kube}"
out_dir="${cache_root}/${kube_version}-${etcd_version}"
bins=(kube-apiserver kube-controller-manager etcd)

have_all() {
  local b
  for b in "${bins[@]}"; do
    [[ -x "${out_dir}/${b}" ]] || return 1
  done
}

# shellcheck source=cache.sh
source "$here/cache.sh"
reuse_cached
build_jobs
lock_build

# Same version stamping as k8s.io/kubernetes/hack/lib/version.sh, so that
# `--version` and GET /version report the real release instead of v0.0.0-master.
kube_semver="${kube_version#v}"
kube_major="${kube_semver%%.*}"
kube_minor="${kube_semver#*.}"
kube_minor="${kube_minor%%.*}"
build_date="$(date -u +'%Y-%m-%dT%H:%M:%SZ')"
kube_ldflags=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kube_ldflags+=" -X '${pkg}.gitVersion=${kube_version}'"
  kube_ldflags+=" -X '${pkg}.gitMajor=${kube_major}'"
  kube_ldflags+=" -X '${pkg}.gitMinor=${kube_minor}'"
  kube_ldflags+=" -X '${pkg}.gitTreeState=clean'"
  kube_ldflags+=" -X '${pkg}.buildDate=${build_date}'"
done
etcd_ldflags="-X 'go.etcd.io/etcd/api/v3/version.GitSHA=module-${etcd_version}'"

export CGO_ENABLED="${CGO_ENABLED:-0}"

log "downloading modules (kube ${kube_version}, etcd ${etcd_version})"
go mod download >&2

start=$(date +%s)
log "building kube-apiserver and kube-controller-manager with -p ${jobs} into ${out_dir}"
go build -mod=readonly -buildvcs=false -p "$jobs" -trimpath -ldflags "-s -w${kube_ldflags}" \
  -o "${tmp_dir}/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager >&2
log "building etcd"
go build -mod=readonly -buildvcs=false -p "$jobs" -trimpath -ldflags "-s -w ${etcd_ldflags}" \
  -o "${tmp_dir}/etcd" ./cmd/etcd >&2

for b in "${bins[@]}"; do
  "${tmp_dir}/${b}" --version >/dev/null 2>&1 || { log "${b} --version failed"; exit 1; }
  mv -f "${tmp_dir}/${b}" "${out_dir}/${b}"
done
log "built in $(( $(date +%s) - start ))s"

printf '%s\n' "$(cd "$out_dir" && pwd)"
