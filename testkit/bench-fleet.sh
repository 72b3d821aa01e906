#!/usr/bin/env bash
# `make bench-fleet`: the operator's memory with 10,000 TenantDatabases, every
# one provisioned on PostgreSQL (Ready, connection Secret, health state, a
# login) — `tenantdb-bench --memory-only` with its throwaway PostgreSQL and
# control plane on a compressing file system.
#
# Each tenant database is a 7.2 MB copy of template1; 10,000 of them are
# 72 GB, more than a machine like the CI's has free. Catalog pages compress
# about 4:1, so this script makes a sparse file of FLEET_IMAGE_SIZE (64G)
# in FLEET_IMAGE_DIR (/var/tmp), formats it btrfs, mounts it through a loop
# device with compress-force=zstd:1 and runs the benchmark with TMPDIR
# there; on exit it unmounts and deletes the file. About 20 GB of real disk
# are written. It needs root (losetup, mount) and btrfs-progs (installed
# from Debian's packages when missing). A run of 10,000 tenants takes about
# three hours on 2 cores. Arguments are passed on to tenantdb-bench; with
# `--plan-fleet N` or `--steady-fleet N` first, that mode runs instead
# (`make bench-plan-fleet`, `make bench-steady-fleet`).
set -euo pipefail

objects=${FLEET_MEMORY_OBJECTS:-1000,5000,10000}
provisioned=${FLEET_PROVISIONED:-10000}
image_dir=${FLEET_IMAGE_DIR:-/var/tmp}
image_size=${FLEET_IMAGE_SIZE:-64G}
bench=${TENANTDB_BENCH:-${CARGO_TARGET_DIR:-target}/release/tenantdb-bench}

if [[ $(id -u) -ne 0 ]]; then
  echo "bench-fleet: needs root (it mounts a loop device); run it with sudo" >&2
  exit 1
fi
if ! command -v mkfs.btrfs >/dev/null; then
  echo "bench-fleet: installing btrfs-progs" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q btrfs-progs >&2
fi
free_gb=$(df --output=avail -BG "$image_dir" | tail -1 | tr -dc 0-9)
if (( free_gb < 30 )); then
  echo "bench-fleet: $image_dir has ${free_gb} GB free; the run writes about 20 GB" >&2
  exit 1
fi

image=$(mktemp "$image_dir/tenantdb-fleet-XXXXXX.img")
mount_point=$(mktemp -d /tmp/tenantdb-fleet-XXXXXX)
log_dir=${FLEET_LOG_DIR:-/var/tmp}
cleanup() {
  # The operator's log of a run that failed (the benchmark removes it
  # only after a run that completes), kept for the post-mortem.
  for log in "$mount_point"/tenantdb-*/operator.log; do
    [[ -f $log ]] || continue
    kept="$log_dir/tenantdb-fleet-operator-$(date +%Y%m%dT%H%M%S).log"
    cp "$log" "$kept" && echo "bench-fleet: the operator's log is kept in $kept" >&2
  done
  umount "$mount_point" 2>/dev/null || umount -l "$mount_point" 2>/dev/null || true
  rmdir "$mount_point" 2>/dev/null || true
  rm -f "$image"
}
trap cleanup EXIT
truncate -s "$image_size" "$image"
mkfs.btrfs -q "$image" >&2
mount -o loop,compress-force=zstd:1,noatime "$image" "$mount_point"
# The throwaway PostgreSQL's directory is made by root and handed to the
# postgres user; everyone may create entries here, as in /tmp.
chmod 1777 "$mount_point"

if [[ ${1:-} == --plan-fleet* || ${1:-} == --steady-fleet* ]]; then
  # `tenantdb plan` over many up-to-date tenants on two servers, or the
  # operator provisioning them and then keeping them quietly.
  TMPDIR=$mount_point "$bench" "$@"
else
  TMPDIR=$mount_point "$bench" --memory-only --memory-objects "$objects" \
    --memory-provisioned "$provisioned" "$@"
fi
