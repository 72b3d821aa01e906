#!/usr/bin/env bash
# Starts a throwaway control plane (etcd + kube-apiserver + kube-controller-manager)
# on 127.0.0.1 from the binaries produced by build.sh, checks /readyz with an
# admin client certificate and the identity of a ServiceAccount client
# certificate, then stops everything. Usage:
#   tests/kube/smoke.sh [BIN_DIR]        (default: output of build.sh)
# Environment: TENANTDB_KUBE_KEEP=1 keeps the control plane running until Ctrl-C.
#   ETCD_CLIENT_PORT / ETCD_PEER_PORT / APISERVER_PORT override the loopback ports.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${1:-$("$here/build.sh" | tail -n1)}"

etcd_client_port="${ETCD_CLIENT_PORT:-23790}"
etcd_peer_port="${ETCD_PEER_PORT:-23800}"
api_port="${APISERVER_PORT:-26443}"
sa_ns=tenantdb-system
sa_name=tenantdb-operator

work="$(mktemp -d "${TMPDIR:-/tmp}/tenantdb-kube.XXXXXX")"
pids=()
cleanup() {
  # Stop in reverse start order (controller-manager, apiserver, etcd) so the
  # apiserver can still reach etcd while it shuts down.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  if [[ "${TENANTDB_KUBE_KEEP_DIR:-0}" == 1 ]]; then
    echo "kept $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
cd "$work"

# ---------------------------------------------------------------- certificates
# One CA signs the apiserver serving cert and all client certs
# (--client-ca-file). Client identity = CN (user) + O (groups).
openssl_q() { openssl "$@" 2>/dev/null; }
openssl_q req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=tenantdb-test-ca" \
  -keyout ca.key -out ca.crt
cat > serving.ext <<'EOF'
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, IP:10.0.0.1
extendedKeyUsage = serverAuth
EOF
printf 'extendedKeyUsage = clientAuth\n' > client.ext
sign() { # name subject extfile
  openssl_q req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr"
  openssl_q x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
    -extfile "$3" -out "$1.crt"
}
sign apiserver "/CN=kube-apiserver" serving.ext
sign admin "/O=system:masters/CN=tenantdb-admin" client.ext
sign sa "/O=system:serviceaccounts/O=system:serviceaccounts:${sa_ns}/CN=system:serviceaccount:${sa_ns}:${sa_name}" client.ext
# Service-account token signing key pair.
openssl_q genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa-signer.key
openssl_q pkey -in sa-signer.key -pubout -out sa-signer.pub

cat > admin.kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:${api_port}
    certificate-authority: ${work}/ca.crt
users:
- name: admin
  user:
    client-certificate: ${work}/admin.crt
    client-key: ${work}/admin.key
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
EOF

wait_http() { # what url curl-args...
  local what="$1" url="$2" i
  shift 2
  for i in $(seq 1 120); do
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      break
    fi
    if curl -fsS --max-time 2 "$@" "$url" >/dev/null 2>&1; then
      echo "$what ready after ~$((i / 2))s" >&2
      return 0
    fi
    sleep 0.5
  done
  echo "$what did not become ready; last lines of its log:" >&2
  tail -n 40 "$work/$what.log" >&2 || true
  return 1
}

# ------------------------------------------------------------------------ etcd
"$bin/etcd" \
  --name=tenantdb-test \
  --data-dir="$work/etcd-data" \
  --listen-client-urls="http://127.0.0.1:${etcd_client_port}" \
  --advertise-client-urls="http://127.0.0.1:${etcd_client_port}" \
  --listen-peer-urls="http://127.0.0.1:${etcd_peer_port}" \
  --initial-advertise-peer-urls="http://127.0.0.1:${etcd_peer_port}" \
  --initial-cluster="tenantdb-test=http://127.0.0.1:${etcd_peer_port}" \
  --listen-metrics-urls="" \
  --unsafe-no-fsync \
  --log-level=warn \
  >"$work/etcd.log" 2>&1 &
pids+=($!)
wait_http etcd "http://127.0.0.1:${etcd_client_port}/health"

# -------------------------------------------------------------- kube-apiserver
"$bin/kube-apiserver" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --endpoint-reconciler-type=none \
  --secure-port="${api_port}" \
  --tls-cert-file="$work/apiserver.crt" \
  --tls-private-key-file="$work/apiserver.key" \
  --client-ca-file="$work/ca.crt" \
  --authorization-mode=RBAC \
  --etcd-servers="http://127.0.0.1:${etcd_client_port}" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --service-account-issuer="https://127.0.0.1:${api_port}" \
  --service-account-key-file="$work/sa-signer.pub" \
  --service-account-signing-key-file="$work/sa-signer.key" \
  --cert-dir="$work/apiserver-certs" \
  --v=1 \
  >"$work/kube-apiserver.log" 2>&1 &
pids+=($!)
admin_curl=(--cacert "$work/ca.crt" --cert "$work/admin.crt" --key "$work/admin.key")
wait_http kube-apiserver "https://127.0.0.1:${api_port}/readyz" "${admin_curl[@]}"

# ----------------------------------------------------- kube-controller-manager
"$bin/kube-controller-manager" \
  --kubeconfig="$work/admin.kubeconfig" \
  --controllers=garbage-collector-controller,namespace-controller \
  --leader-elect=false \
  --secure-port=0 \
  --v=1 \
  >"$work/kube-controller-manager.log" 2>&1 &
pids+=($!)

# ---------------------------------------------------------------------- checks
api="https://127.0.0.1:${api_port}"
echo "--- GET /readyz?verbose (admin)" >&2
curl -fsS "${admin_curl[@]}" "$api/readyz?verbose" | tail -n 3 >&2
echo "--- GET /version" >&2
curl -fsS "${admin_curl[@]}" "$api/version" >&2
echo >&2
whoami() { # curl-args...
  curl -fsS "$@" -H 'Content-Type: application/json' -X POST \
    -d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' \
    "$api/apis/authentication.k8s.io/v1/selfsubjectreviews"
}
echo "--- SelfSubjectReview (admin cert)" >&2
whoami "${admin_curl[@]}" >&2
echo >&2
sa_curl=(--cacert "$work/ca.crt" --cert "$work/sa.crt" --key "$work/sa.key")
echo "--- SelfSubjectReview (ServiceAccount cert)" >&2
whoami "${sa_curl[@]}" >&2
echo >&2
echo "--- GET namespaces as ServiceAccount (expect 403 without RBAC)" >&2
code="$(curl -sS -o /dev/null -w '%{http_code}' "${sa_curl[@]}" "$api/api/v1/namespaces")"
echo "HTTP $code" >&2
[[ "$code" == 403 ]]

# Namespace controller: a deleted namespace must actually disappear.
echo "--- namespace deletion via kube-controller-manager" >&2
curl -fsS "${admin_curl[@]}" -H 'Content-Type: application/json' -X POST \
  -d '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"smoke"}}' \
  "$api/api/v1/namespaces" >/dev/null
curl -fsS "${admin_curl[@]}" -X DELETE "$api/api/v1/namespaces/smoke" >/dev/null
gone=0
for _ in $(seq 1 60); do
  if [[ "$(curl -sS -o /dev/null -w '%{http_code}' "${admin_curl[@]}" "$api/api/v1/namespaces/smoke")" == 404 ]]; then
    gone=1
    break
  fi
  sleep 0.5
done
if [[ $gone == 1 ]]; then
  echo "namespace smoke finalized and removed" >&2
else
  echo "namespace smoke still present; kube-controller-manager log:" >&2
  tail -n 40 "$work/kube-controller-manager.log" >&2
  exit 1
fi

# Garbage collector: a dependent with an ownerReference must be deleted
# after its owner is.
echo "--- garbage collection via kube-controller-manager" >&2
cm_url="$api/api/v1/namespaces/default/configmaps"
owner_uid="$(curl -fsS "${admin_curl[@]}" -H 'Content-Type: application/json' -X POST \
  -d '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"owner"}}' "$cm_url" |
  sed -n 's/^ *"uid": "\([^"]*\)".*/\1/p')"
[[ -n "$owner_uid" ]]
curl -fsS "${admin_curl[@]}" -H 'Content-Type: application/json' -X POST \
  -d '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dependent","ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"owner","uid":"'"$owner_uid"'"}]}}' \
  "$cm_url" >/dev/null
curl -fsS "${admin_curl[@]}" -X DELETE "$cm_url/owner" >/dev/null
gone=0
for _ in $(seq 1 60); do
  if [[ "$(curl -sS -o /dev/null -w '%{http_code}' "${admin_curl[@]}" "$cm_url/dependent")" == 404 ]]; then
    gone=1
    break
  fi
  sleep 0.5
done
if [[ $gone == 1 ]]; then
  echo "dependent configmap garbage-collected" >&2
else
  echo "dependent configmap still present; kube-controller-manager log:" >&2
  tail -n 40 "$work/kube-controller-manager.log" >&2
  exit 1
fi

if [[ "${TENANTDB_KUBE_KEEP:-0}" == 1 ]]; then
  echo "control plane running; kubeconfig: $work/admin.kubeconfig (Ctrl-C to stop)" >&2
  wait
fi
echo "smoke test passed" >&2
