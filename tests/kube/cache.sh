# Sourced by build.sh and build-clients.sh: reusing the cache directory,
# the build's parallelism, and the lock that serialises builds of one
# version (parallel test runs). The caller sets out_dir and defines log
# (to stderr) and have_all (whether out_dir holds a complete build).

# Prints out_dir's absolute path and ends the script when have_all holds,
# unless TENANTDB_KUBE_REBUILD=1.
reuse_cached() {
  if [[ "${TENANTDB_KUBE_REBUILD:-0}" != 1 ]] && have_all; then
    log "reusing cached binaries in ${out_dir}"
    printf '%s\n' "$(cd "$out_dir" && pwd)"
    exit 0
  fi
}

# Sets jobs (go build -p) from TENANTDB_KUBE_BUILD_JOBS, else the number of cores.
build_jobs() {
  jobs="${TENANTDB_KUBE_BUILD_JOBS:-}"
  if [[ -z "$jobs" ]]; then
    jobs="$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 1)"
  fi
  [[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { log "TENANTDB_KUBE_BUILD_JOBS must be a positive integer, got '${jobs}'"; exit 1; }
}

# Takes out_dir's build lock (flock, else a lock directory), makes tmp_dir
# (removed on exit, with the lock directory), and reuses what another
# process built while this one waited.
lock_build() {
  mkdir -p "$out_dir"
  lock_dir="${out_dir}.lock"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"${out_dir}.lock"
    flock 9
    lock_dir=""
  else
    until mkdir "$lock_dir" 2>/dev/null; do
      log "waiting for ${lock_dir} (remove it if no build is running)"
      sleep 5
    done
  fi
  tmp_dir="$(mktemp -d "${out_dir}.tmp.XXXXXX")"
  trap 'rm -rf "$tmp_dir"; [[ -z "$lock_dir" ]] || rmdir "$lock_dir" 2>/dev/null || true' EXIT
  reuse_cached
}
