//! A hostile tenant, as the threat model has it: logged in with nothing but
//! its own credentials, it plants objects in its `public` schema that shadow
//! every catalog function, view, table, type and operator name appearing in
//! tenantdb's SQL (aggregates, variadic functions and prefix operators
//! included), puts triggers and an implicit cast on its tables, then
//! sets hostile database-level settings. Every shadow records the role it
//! ran as; a run as anyone but the tenant is counted in a sequence, which no
//! rollback undoes, and fails the statement that ran it with an error
//! naming [`ESCAPE`] — so an escape is seen even where counting cannot
//! write (a read-only session, a database being dropped).
//!
//! The names come from the source itself: every identifier in a string
//! literal under `src/` that names a `pg_catalog` object gets a shadow, so a
//! new query cannot escape the suite.

use std::collections::BTreeSet;
use std::path::Path;

use sqlx::{Connection, PgConnection, Row};

/// Identifiers and operators in the string literals of tenantdb's source.
pub fn names_in_source() -> (Vec<String>, Vec<String>) {
    let mut words = BTreeSet::new();
    let mut operators = BTreeSet::new();
    let mut files = Vec::new();
    collect_rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() > 20, "the source tree was not found");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for literal in string_literals(&text) {
            let mut word = String::new();
            let mut symbol = String::new();
            for c in literal.chars().chain([' ']) {
                if c.is_ascii_alphanumeric() || c == '_' {
                    word.push(c);
                } else if !word.is_empty() {
                    words.insert(word.to_ascii_lowercase());
                    word.clear();
                }
                if "=<>!~|-+*/%&^#@".contains(c) {
                    symbol.push(c);
                } else if !symbol.is_empty() {
                    operators.insert(std::mem::take(&mut symbol));
                }
            }
        }
    }
    // LIKE and IN are spelt as words but resolve to operators.
    if words.contains("like") {
        operators.extend(["~~".to_owned(), "!~~".to_owned()]);
    }
    operators.insert("=".to_owned());
    (words.into_iter().collect(), operators.into_iter().collect())
}

fn collect_rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The contents of the `"…"` literals in Rust source (escapes kept).
fn string_literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        if c == '"' && previous != '\'' {
            let mut literal = String::new();
            let mut escaped = false;
            for c in chars.by_ref() {
                if escaped {
                    escaped = false;
                    literal.push(c);
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    break;
                } else {
                    literal.push(c);
                }
            }
            out.push(literal);
            previous = '"';
        } else {
            previous = c;
        }
    }
    out
}

/// The start of the error a shadow raises when it runs as anyone but the
/// tenant.
pub const ESCAPE: &str = "tenantdb-shadow escaped";

/// What was planted.
#[derive(Debug, Default)]
pub struct Planted {
    pub functions: i64,
    pub aggregates: i64,
    pub relations: i64,
    pub types: i64,
    pub operators: i64,
}

/// Catalog names that cannot be shadowed, by the start of the reason the
/// planting gives: PostgreSQL has no way to create them in a schema.
const UNSHADOWABLE: &[&str] = &[
    // `any` and `unknown`: no type of those names can be created.
    "a pseudo-type",
    // `mode() WITHIN GROUP (ORDER BY …)`: called only with that syntax.
    "an ordered-set or hypothetical-set aggregate",
    // A support function (`system(internal)`, TABLESAMPLE's): SQL cannot
    // pass an `internal` value, so no statement can call it or a shadow.
    "takes an internal argument",
];

const SETUP: &str = r#"
CREATE TABLE public.shadow_runs (at timestamptz DEFAULT clock_timestamp(), who text, session_who text, what text);
CREATE SEQUENCE public.ran_as_other;
CREATE SEQUENCE public.ran_total;
GRANT ALL ON public.shadow_runs, public.ran_as_other, public.ran_total TO PUBLIC;
CREATE FUNCTION public.tenantdb_shadow_ran(what text) RETURNS boolean LANGUAGE plpgsql
  SET search_path = pg_catalog AS $f$
BEGIN
  BEGIN
    PERFORM nextval('public.ran_total'::regclass);
    IF current_user <> '@TENANT@' THEN
      PERFORM nextval('public.ran_as_other'::regclass);
    END IF;
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  BEGIN
    INSERT INTO public.shadow_runs (who, session_who, what) VALUES (current_user, session_user, what);
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  -- Counting can fail (a read-only session, a database about to be
  -- dropped); the error cannot: whatever ran this as another role fails.
  IF current_user <> '@TENANT@' THEN
    RAISE EXCEPTION '@ESCAPE@: % ran as %', what, current_user;
  END IF;
  RETURN true;
END $f$;
CREATE FUNCTION public.tenantdb_plant(words text[], ops text[])
  RETURNS TABLE (kind text, signature text, error text) LANGUAGE plpgsql
  SET search_path = pg_catalog AS $f$
DECLARE
  r record; args text; arglist text; body text; argtypes text;
BEGIN
  -- Functions, variadic ones included. PL/pgSQL cannot take "any": a
  -- shadow takes anyelement (or text[] for VARIADIC "any") instead, which
  -- still outranks the catalog's function for the arguments tenantdb passes.
  FOR r IN SELECT p.oid, p.proname, p.pronargs, p.proretset, p.prorettype, p.provariadic,
                  replace(replace(pg_get_function_arguments(p.oid), 'VARIADIC "any"', 'VARIADIC text[]'), '"any"', 'anyelement') AS arguments,
                  pg_get_function_result(p.oid) AS result
             FROM pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY (words) AND p.prokind = 'f' LOOP
    args := coalesce((SELECT string_agg(CASE WHEN i = r.pronargs AND r.provariadic <> 0 THEN 'VARIADIC $' ELSE '$' END || i, ', ')
                        FROM generate_series(1, r.pronargs) i), '');
    body := CASE
      WHEN r.prorettype = 'void'::regtype THEN format('PERFORM pg_catalog.%I(%s); RETURN;', r.proname, args)
      WHEN r.proretset THEN format('RETURN QUERY SELECT * FROM pg_catalog.%I(%s);', r.proname, args)
      ELSE format('RETURN pg_catalog.%I(%s);', r.proname, args) END;
    kind := 'function'; signature := format('%s(%s)', r.proname, r.arguments); error := NULL;
    BEGIN
      IF 'internal'::regtype = ANY ((SELECT p.proargtypes FROM pg_proc p WHERE p.oid = r.oid)::oid[]) THEN
        RAISE EXCEPTION 'takes an internal argument';
      END IF;
      EXECUTE format('CREATE FUNCTION public.%I(%s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS %L',
                     r.proname, r.arguments, r.result,
                     format('BEGIN PERFORM public.tenantdb_shadow_ran(%L); %s END', r.proname, body));
    EXCEPTION WHEN OTHERS THEN error := SQLERRM;
    END;
    RETURN NEXT;
  END LOOP;
  -- Aggregates: a shadow whose transition function records the run
  -- (anyenum as anyelement: PostgreSQL refuses anyenum as a state type).
  FOR r IN SELECT p.oid, p.proname, a.aggkind,
                  replace(replace(pg_get_function_identity_arguments(p.oid), '"any"', 'anyelement'), 'anyenum', 'anyelement') AS arguments,
                  replace(pg_get_function_result(p.oid), 'anyenum', 'anyelement') AS result
             FROM pg_proc p JOIN pg_aggregate a ON a.aggfnoid = p.oid
            WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY (words) LOOP
    kind := 'aggregate'; signature := format('%s(%s)', r.proname, r.arguments); error := NULL;
    BEGIN
      IF r.aggkind <> 'n' THEN
        RAISE EXCEPTION 'an ordered-set or hypothetical-set aggregate';
      END IF;
      EXECUTE format('CREATE FUNCTION public.tenantdb_agg_%s(%s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS %L',
                     r.oid, concat_ws(', ', r.result, nullif(r.arguments, '')), r.result,
                     format('BEGIN PERFORM public.tenantdb_shadow_ran(%L); RETURN $1; END', 'aggregate ' || r.proname));
      EXECUTE format('CREATE AGGREGATE public.%I(%s) (SFUNC = public.tenantdb_agg_%s, STYPE = %s)',
                     r.proname, coalesce(nullif(r.arguments, ''), '*'), r.oid, r.result);
    EXCEPTION WHEN OTHERS THEN error := SQLERRM;
    END;
    RETURN NEXT;
  END LOOP;
  FOR r IN SELECT c.relname FROM pg_class c
            WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relname = ANY (words)
              AND c.relkind IN ('r', 'v') LOOP
    kind := 'relation'; signature := r.relname; error := NULL;
    BEGIN
      EXECUTE format('CREATE VIEW public.%I AS SELECT * FROM pg_catalog.%I WHERE public.tenantdb_shadow_ran(%L)',
                     r.relname, r.relname, r.relname);
    EXCEPTION WHEN OTHERS THEN error := SQLERRM;
    END;
    RETURN NEXT;
  END LOOP;
  -- Operators, infix and prefix.
  FOR r IN SELECT o.oid, o.oprname, o.oprkind, format_type(o.oprleft, NULL) AS l, format_type(o.oprright, NULL) AS rt,
                  format_type(o.oprresult, NULL) AS result, o.oprcode::text AS code
             FROM pg_operator o
            WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oprname = ANY (ops) LOOP
    kind := 'operator';
    signature := CASE r.oprkind WHEN 'b' THEN format('%s %s %s', r.l, r.oprname, r.rt) ELSE format('%s %s', r.oprname, r.rt) END;
    error := NULL;
    BEGIN
      IF r.oprkind = 'b' THEN
        EXECUTE format('CREATE FUNCTION public.tenantdb_op_%s(%s, %s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS %L',
                       r.oid, r.l, r.rt, r.result,
                       format('BEGIN PERFORM public.tenantdb_shadow_ran(%L); RETURN %s($1, $2); END', 'operator ' || r.oprname, r.code));
        EXECUTE format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.tenantdb_op_%s)',
                       r.oprname, r.l, r.rt, r.oid);
      ELSE
        EXECUTE format('CREATE FUNCTION public.tenantdb_op_%s(%s) RETURNS %s LANGUAGE plpgsql SET search_path = pg_catalog AS %L',
                       r.oid, r.rt, r.result,
                       format('BEGIN PERFORM public.tenantdb_shadow_ran(%L); RETURN %s($1); END', 'operator ' || r.oprname, r.code));
        EXECUTE format('CREATE OPERATOR public.%s (RIGHTARG = %s, FUNCTION = public.tenantdb_op_%s)',
                       r.oprname, r.rt, r.oid);
      END IF;
    EXCEPTION WHEN OTHERS THEN error := SQLERRM;
    END;
    RETURN NEXT;
  END LOOP;
  -- Types last: a shadowed type would change how the statements above read.
  -- A catalog's row type is shadowed by the view above of the same name.
  FOR r IN SELECT t.typname, t.typtype FROM pg_type t
            WHERE t.typnamespace = 'pg_catalog'::regnamespace AND t.typname = ANY (words)
              AND t.typname NOT LIKE '\_%' LOOP
    kind := 'type'; signature := r.typname; error := NULL;
    BEGIN
      IF r.typtype = 'c' THEN
        PERFORM 1 FROM pg_type v WHERE v.typnamespace = 'public'::regnamespace AND v.typname = r.typname;
        IF NOT FOUND THEN
          RAISE EXCEPTION 'a row type whose relation has no shadow view';
        END IF;
      ELSIF r.typtype = 'p' THEN
        RAISE EXCEPTION 'a pseudo-type: no type of that name can be created';
      ELSE
        EXECUTE format('CREATE DOMAIN public.%I AS pg_catalog.%I CHECK (public.tenantdb_shadow_ran(%L))',
                       r.typname, r.typname, 'type ' || r.typname);
      END IF;
    EXCEPTION WHEN OTHERS THEN error := SQLERRM;
    END;
    RETURN NEXT;
  END LOOP;
END $f$;
"#;

/// The tenant's application schema, with a trigger on every table and an
/// implicit cast from its enum that records who ran it (index expressions
/// over `status` call it, and PostgreSQL folds it on constants).
const TABLES: &str = r#"
CREATE TYPE public.order_status AS ENUM ('open', 'paid');
CREATE FUNCTION public.order_status_text(public.order_status) RETURNS text LANGUAGE plpgsql IMMUTABLE
  SET search_path = pg_catalog AS $f$
BEGIN
  PERFORM public.tenantdb_shadow_ran('cast order_status -> text');
  RETURN textin(enum_out($1));
END $f$;
CREATE CAST (public.order_status AS text) WITH FUNCTION public.order_status_text(public.order_status) AS IMPLICIT;
CREATE TABLE public.orders (id bigint, email text, status public.order_status, created_at timestamptz);
INSERT INTO public.orders SELECT g, 'user' || g || '@example.com', 'open', now() FROM generate_series(1, 50) g;
CREATE FUNCTION public.tenantdb_shadow_trigger() RETURNS trigger LANGUAGE plpgsql
  SET search_path = pg_catalog AS $f$
BEGIN
  PERFORM public.tenantdb_shadow_ran('trigger on ' || TG_TABLE_NAME);
  RETURN NULL;
END $f$;
CREATE TRIGGER shadow_rows AFTER INSERT OR UPDATE OR DELETE ON public.orders
  FOR EACH STATEMENT EXECUTE FUNCTION public.tenantdb_shadow_trigger();
CREATE TRIGGER shadow_truncate AFTER TRUNCATE ON public.orders
  FOR EACH STATEMENT EXECUTE FUNCTION public.tenantdb_shadow_trigger();
-- An index of a declared name that tenantdb did not build: tenantdb must
-- probe it to tell whether it is the declared one.
CREATE INDEX orders_status_idx ON public.orders (lower(status)) WHERE lower(status) <> lower('paid'::public.order_status);
"#;

/// The declared indexes that exercise the hostile tenant's objects.
pub fn indexes() -> serde_json::Value {
    serde_json::json!([
        {"name": "orders_status_idx", "table": "orders", "expressions": ["lower(status)"],
         "where": "lower(status) <> lower('paid'::public.order_status)"},
        {"name": "orders_email_idx", "table": "orders", "expressions": ["lower(status)", "lower(email)"],
         "where": "lower(status) <> lower('paid'::public.order_status)"},
    ])
}

/// Hostile database-level settings (and flags) the tenant sets as owner.
const SETTINGS: &[&str] = &[
    "SET search_path = public, pg_catalog",
    "SET statement_timeout = '1ms'",
    "SET lock_timeout = '1ms'",
    "SET idle_in_transaction_session_timeout = '1ms'",
    "SET default_transaction_read_only = on",
    "SET default_transaction_isolation = 'serializable'",
    "SET default_transaction_deferrable = on",
    "SET check_function_bodies = off",
    "SET client_min_messages = 'debug5'",
    "SET standard_conforming_strings = off",
    "SET quote_all_identifiers = on",
    "SET transform_null_equals = on",
    "SET exit_on_error = on",
    "SET default_text_search_config = 'pg_catalog.german'",
    "SET row_security = off",
    "SET IntervalStyle = 'sql_standard'",
    "SET role = '@TENANT@'",
    "CONNECTION LIMIT 5000",
    "IS_TEMPLATE true",
];

/// Plants everything over `conn` (the tenant's own session in its
/// database), then sets the hostile settings of `database`.
pub async fn plant(conn: &mut PgConnection, tenant_role: &str, database: &str) -> Planted {
    let (words, operators) = names_in_source();
    sqlx::raw_sql(sqlx::AssertSqlSafe(
        SETUP.replace("@TENANT@", tenant_role).replace("@ESCAPE@", ESCAPE),
    ))
    .execute(&mut *conn)
    .await
    .expect("setting up the shadow log");
    let made: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT kind, signature, error FROM public.tenantdb_plant($1, $2)")
            .bind(&words)
            .bind(&operators)
            .fetch_all(&mut *conn)
            .await
            .expect("planting shadows");
    // Every catalog object the source names gets a shadow, or the suite
    // fails here: a new query cannot use a name that escapes it.
    let missed: Vec<&(String, String, Option<String>)> = made
        .iter()
        .filter(|(_, _, error)| {
            error
                .as_deref()
                .is_some_and(|e| !UNSHADOWABLE.iter().any(|reason| e.starts_with(reason)))
        })
        .collect();
    assert!(
        missed.is_empty(),
        "catalog objects left without a shadow: {missed:#?}"
    );
    let planted = |kind: &str| {
        made.iter()
            .filter(|(k, _, error)| k == kind && error.is_none())
            .count() as i64
    };
    sqlx::raw_sql(TABLES)
        .execute(&mut *conn)
        .await
        .expect("creating the tenant's tables");
    for setting in SETTINGS {
        let statement = format!(
            "ALTER DATABASE \"{database}\" {}",
            setting.replace("@TENANT@", tenant_role)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    Planted {
        functions: planted("function"),
        aggregates: planted("aggregate"),
        relations: planted("relation"),
        types: planted("type"),
        operators: planted("operator"),
    }
}

/// How often a shadow ran, and how often as someone other than the tenant;
/// read by `inspector` (a superuser session in the tenant database).
pub async fn runs(inspector: &mut PgConnection) -> (i64, i64) {
    let row = sqlx::query(
        "SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.ran_total) AS total,
                (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.ran_as_other) AS other",
    )
    .fetch_one(&mut *inspector)
    .await
    .unwrap();
    (row.get("total"), row.get("other"))
}

/// Who ran which shadow, as far as committed work recorded it.
/// Distinct (role, session role, shadow) triples.
pub async fn recorded(inspector: &mut PgConnection) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT DISTINCT who, session_who, what FROM public.shadow_runs ORDER BY 1, 2, 3")
        .fetch_all(&mut *inspector)
        .await
        .unwrap()
}

/// Puts the counter of runs as another role back to zero (after a
/// positive control).
pub async fn reset(inspector: &mut PgConnection) {
    sqlx::query("SELECT pg_catalog.setval('public.ran_as_other', 1, false)")
        .execute(&mut *inspector)
        .await
        .unwrap();
    sqlx::query("DELETE FROM public.shadow_runs")
        .execute(&mut *inspector)
        .await
        .unwrap();
}

/// What must never change for a role: its password verifier, attributes
/// and memberships (read as the superuser).
pub async fn role_fingerprint(role: &str) -> String {
    let mut conn = super::connect().await;
    sqlx::query_scalar(
        "SELECT concat_ws('|', a.rolpassword, a.rolsuper, a.rolcreaterole, a.rolcreatedb, a.rolreplication,
                          a.rolbypassrls, a.rolcanlogin,
                          (SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) FROM pg_auth_members m
                             JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = a.oid))
           FROM pg_authid a WHERE a.rolname = $1",
    )
    .bind(role)
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// Both extensions the hostile tests declare (`pg_trgm`, `citext`) are
/// installed in the schema `extensions`, which `role` cannot create in.
pub async fn assert_both_extensions_installed_apart(inspector: &mut PgConnection, role: &str) {
    let extensions: Vec<(String, String)> = sqlx::query_as(
        "SELECT e.extname::text, n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
          WHERE e.extname IN ('pg_trgm', 'citext') ORDER BY 1",
    )
    .fetch_all(&mut *inspector)
    .await
    .unwrap();
    assert_eq!(
        extensions,
        [
            ("citext".to_owned(), "extensions".to_owned()),
            ("pg_trgm".to_owned(), "extensions".to_owned())
        ]
    );
    let writable: bool = sqlx::query_scalar("SELECT has_schema_privilege($1, 'extensions', 'CREATE')")
        .bind(role)
        .fetch_one(&mut *inspector)
        .await
        .unwrap();
    assert!(
        !writable,
        "the tenant can create objects in the extensions schema"
    );
}

/// A superuser session in `database` with a clean search path, for inspection.
pub async fn inspector(database: &str) -> PgConnection {
    let mut conn = PgConnection::connect_with(&super::server_options().database(database).options([
        ("search_path", "pg_catalog"),
        ("default_transaction_read_only", "off"),
        ("role", "none"),
        ("statement_timeout", "0"),
        ("lock_timeout", "0"),
        ("idle_in_transaction_session_timeout", "0"),
    ]))
    .await
    .unwrap();
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    conn
}
