#!/usr/bin/env bash
# Builds the clients the tests drive the real control plane with — helm
# (helm.sh/helm/v3/cmd/helm) and kstatus (./clients/cmd/kstatus, the health
# verdict of sigs.k8s.io/cli-utils' kstatus) — from the Go modules pinned in
# tests/kube/clients/go.mod, and caches them in
#   ${TENANTDB_KUBE_CACHE:-$HOME/.cache/tenantdb/kube}/helm-<helm version>-cli-utils-<cli-utils version>/
# Binaries already present there are reused (rebuilt when go.mod, go.sum or
# the kstatus source changed). The last line on stdout is the absolute path
# of that directory; everything else goes to stderr.
#
# Environment:
#   TENANTDB_KUBE_CACHE       cache root (default: $HOME/.cache/tenantdb/kube)
#   TENANTDB_KUBE_BUILD_JOBS  go build -p N (default: number of cores)
#   TENANTDB_KUBE_REBUILD=1   ignore cached binaries and rebuild
#
# Needs only Go (>= the go directive in clients/go.mod) and a reachable module
# proxy. CGO is disabled, so no C toolchain is needed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/clients"

log() { printf 'tests/kube/build-clients.sh: %s\n' "$*" >&2; }

command -v go >/dev/null 2>&1 || { log "go not found in PATH"; exit 1; }

# Module versions come from go.mod (no download needed for `go list -m`).
helm_version="$(go list -mod=readonly -m -f '{{.Version}}' helm.sh/helm/v3)"
cli_utils_version="$(go list -mod=readonly -m -f '{{.Version}}' sigs.k8s.io/cli-utils)"
client_go_version="$(go list -mod=readonly -m -f '{{.Version}}' k8s.io/client-go)"

cache_root="${TENANTDB_KUBE_CACHE:-$HOME/.cache/tenantdb/kube}"
out_dir="${cache_root}/helm-${helm_version}-cli-utils-${cli_utils_version}"
bins=(helm kstatus)

# The directory is keyed by the two versions; this stamp catches the rest
# (a changed go.sum, or an edited kstatus command).
source_hash="$(cat go.mod go.sum cmd/kstatus/main.go | sha256sum | cut -c1-16)"

have_all() {
  local b
  for b in "${bins[@]}"; do
    [[ -x "${out_dir}/${b}" ]] || return 1
  done
  [[ "$(cat "${out_dir}/.source" 2>/dev/null)" == "$source_hash" ]]
}

# shellcheck source=cache.sh
source "$here/cache.sh"
reuse_cached
build_jobs
lock_build

# The ldflags of helm's Makefile for a release tag: the version, no
# "unreleased" metadata, a clean tree, and the Kubernetes version helm
# assumes for .Capabilities.KubeVersion and the deprecation lint (client-go
# v0.X.Y → 1.X; without them helm says 1.20). The module carries no git
# commit, so gitCommit stays empty (`helm version` prints GitCommit:"").
k8s_semver="${client_go_version#v}"
k8s_major="$(( ${k8s_semver%%.*} + 1 ))"
k8s_minor="${k8s_semver#*.}"
k8s_minor="${k8s_minor%%.*}"
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=${helm_version}"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X ${pkg}.k8sVersionMajor=${k8s_major}"
  helm_ldflags+=" -X ${pkg}.k8sVersionMinor=${k8s_minor}"
done

export CGO_ENABLED="${CGO_ENABLED:-0}"

log "downloading modules (helm ${helm_version}, cli-utils ${cli_utils_version}, client-go ${client_go_version})"
go mod download >&2

start=$(date +%s)
log "building helm with -p ${jobs} into ${out_dir}"
go build -mod=readonly -buildvcs=false -p "$jobs" -trimpath -ldflags "-s -w ${helm_ldflags}" \
  -o "${tmp_dir}/helm" helm.sh/helm/v3/cmd/helm >&2
log "building kstatus"
go build -mod=readonly -buildvcs=false -p "$jobs" -trimpath -ldflags "-s -w" \
  -o "${tmp_dir}/kstatus" ./cmd/kstatus >&2

reported="$("${tmp_dir}/helm" version --template '{{.Version}}' 2>/dev/null)" || { log "helm version failed"; exit 1; }
[[ "$reported" == "$helm_version" ]] || { log "helm version reports '${reported}', expected '${helm_version}'"; exit 1; }
"${tmp_dir}/kstatus" -h >/dev/null 2>&1 || { log "kstatus -h failed"; exit 1; }
for b in "${bins[@]}"; do
  mv -f "${tmp_dir}/${b}" "${out_dir}/${b}"
done
printf '%s\n' "$source_hash" >"${out_dir}/.source"
log "built in $(( $(date +%s) - start ))s"

printf '%s\n' "$(cd "$out_dir" && pwd)"
