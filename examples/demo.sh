#!/usr/bin/env bash
# The local demo, run by `make demo` inside `tenantdb sandbox` (which sets
# TENANTDB_ADMIN_URL to a throwaway PostgreSQL): preview, provision, prove
# idempotence, log in as a tenant with its generated Secret.
set -euo pipefail
tenantdb=${TENANTDB:-${CARGO_TARGET_DIR:-target}/debug/tenantdb}
secrets=$(mktemp -d)
trap 'rm -rf "$secrets"' EXIT
psql=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -n 1)

echo "== tenantdb plan: what apply would do"
"$tenantdb" plan -f examples/ --secrets-dir "$secrets"

echo; echo "== tenantdb apply"
"$tenantdb" apply -f examples/ --secrets-dir "$secrets"

echo; echo "== tenantdb plan again: nothing left to do"
"$tenantdb" plan -f examples/ --secrets-dir "$secrets" --detailed-exitcode

echo; echo "== psql as tenant acme, with the DATABASE_URL from its Secret ($secrets/tenants-acme-db.yaml)"
url=$(sed -n 's/^  DATABASE_URL: //p' "$secrets/tenants-acme-db.yaml")
"$psql" -X "$url" -c "SELECT current_database(), current_user, current_setting('statement_timeout') AS statement_timeout"

echo "== and refused by tenant globex's database"
if "$psql" -X "${url/\/tenants_acme\?//tenants_globex?}" -c "SELECT 1" 2>&1; then
  echo "isolation broken: acme reached globex's database" >&2
  exit 1
fi

echo; echo "== globex's application runs its migrations; apply builds the declared indexes online"
globex=$(sed -n 's/^  DATABASE_URL: //p' "$secrets/tenants-globex-db.yaml")
"$psql" -X -q "$globex" -c "
  CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint, status text, total numeric,
                       created_at timestamptz DEFAULT now(), deleted_at timestamptz);
  CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);
  CREATE SCHEMA app;
  CREATE TABLE app.events (id bigserial PRIMARY KEY, payload jsonb);"
"$tenantdb" apply -f examples/ --secrets-dir "$secrets"
"$psql" -X "$globex" -c "
  SELECT c.relname AS index, i.indisvalid AS valid, pg_get_indexdef(c.oid) AS definition
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
   WHERE obj_description(c.oid, 'pg_class') LIKE 'tenantdb.io/%' ORDER BY 1"

echo; echo "== tenantdb plan: indexes in place, nothing to do"
"$tenantdb" plan -f examples/ --secrets-dir "$secrets" --detailed-exitcode
