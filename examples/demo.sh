#!/usr/bin/env bash
# The local demo, run by `make demo` inside `tenantdb sandbox` (which sets
# TENANTDB_ADMIN_URL to a throwaway PostgreSQL, and TENANTDB_CACHE_ADMIN_URL
# to a throwaway Redis): preview, provision, prove idempotence, log in as a
# tenant with its generated Secret, use its cache and be refused another's.
set -euo pipefail
tenantdb=${TENANTDB:-${CARGO_TARGET_DIR:-target}/debug/tenantdb}
secrets=$(mktemp -d)
trap 'rm -rf "$secrets"' EXIT
psql=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -n 1)
# A value of a Secret file's stringData (YAML may quote it).
secret_value() { sed -n "s/^  $2: //p" "$secrets/$1" | sed -e "s/^'\(.*\)'$/\1/" -e 's/^"\(.*\)"$/\1/'; }

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

echo; echo "== acme's application keeps a session in its cache, with the REDIS_URL from its Secret"
redis_url=$(secret_value tenants-acme-db.yaml REDIS_URL)
prefix=$(secret_value tenants-acme-db.yaml REDIS_KEY_PREFIX)
redis-cli --no-auth-warning -u "$redis_url" SET "${prefix}session:42" '{"user":"ada"}' EX 1800
redis-cli --no-auth-warning -u "$redis_url" GET "${prefix}session:42"

echo "== and is refused globex's keys, and FLUSHALL"
for command in "GET tenants:globex:session:1" "FLUSHALL"; do
  # shellcheck disable=SC2086 # the command's words
  said=$(redis-cli --no-auth-warning -u "$redis_url" $command 2>&1 || true)
  echo "$command: $said"
  case $said in
    *NOPERM*) ;;
    *) echo "isolation broken: acme ran $command" >&2; exit 1 ;;
  esac
done

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
