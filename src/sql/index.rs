//! Index definitions and their DDL. Every part of a definition arrives
//! validated — names as [`Ident`]s, expressions and predicates as
//! [`IndexExpression`]s re-rendered from their syntax tree — so rendering
//! is assembly, never splicing of user text.

use std::fmt::Write as _;

use super::expression::IndexExpression;
use super::{Ident, Statement, literal};

/// Index access method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Btree,
    Hash,
    Gin,
    Gist,
    Brin,
}

impl Method {
    fn as_sql(self) -> &'static str {
        match self {
            Method::Btree => "btree",
            Method::Hash => "hash",
            Method::Gin => "gin",
            Method::Gist => "gist",
            Method::Brin => "brin",
        }
    }
}

/// One key of an index: a column with its ordering, or an expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexKey {
    Column {
        column: Ident,
        descending: Option<bool>,
        nulls_first: Option<bool>,
    },
    Expression(IndexExpression),
}

/// Everything that defines an index except its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexDefinition {
    pub schema: Ident,
    pub table: Ident,
    pub unique: bool,
    pub method: Method,
    pub keys: Vec<IndexKey>,
    pub include: Vec<Ident>,
    pub predicate: Option<IndexExpression>,
}

impl IndexDefinition {
    /// `USING method (keys) [INCLUDE (…)] [WHERE …]`: the part after the
    /// table, shared by the real index and the probe.
    fn body(&self) -> String {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|key| match key {
                IndexKey::Column {
                    column,
                    descending,
                    nulls_first,
                } => {
                    let mut out = column.to_string();
                    match descending {
                        Some(true) => out.push_str(" DESC"),
                        Some(false) => out.push_str(" ASC"),
                        None => {}
                    }
                    match nulls_first {
                        Some(true) => out.push_str(" NULLS FIRST"),
                        Some(false) => out.push_str(" NULLS LAST"),
                        None => {}
                    }
                    out
                }
                // Parenthesised, as PostgreSQL requires of an expression key.
                IndexKey::Expression(expression) => format!("({})", expression.as_sql()),
            })
            .collect();
        let mut out = format!("USING {} ({})", self.method.as_sql(), keys.join(", "));
        if !self.include.is_empty() {
            let include: Vec<String> = self.include.iter().map(Ident::to_string).collect();
            let _ = write!(out, " INCLUDE ({})", include.join(", "));
        }
        if let Some(predicate) = &self.predicate {
            let _ = write!(out, " WHERE ({})", predicate.as_sql());
        }
        out
    }

    fn create(&self, name: &str, table: &str, concurrently: bool) -> String {
        format!(
            "CREATE {}INDEX {}{name} ON {table} {}",
            if self.unique { "UNIQUE " } else { "" },
            if concurrently { "CONCURRENTLY " } else { "" },
            self.body()
        )
    }

    /// The canonical text of the definition (name left out), from which
    /// the fingerprint in the managed marker is computed.
    pub fn canonical(&self) -> String {
        self.create("_", &format!("{}.{}", self.schema, self.table), false)
    }
}

/// `CREATE [UNIQUE] INDEX CONCURRENTLY name ON schema.table …` — cannot run
/// inside a transaction block.
pub fn create_index_concurrently(name: &Ident, definition: &IndexDefinition) -> Statement {
    sqlx::AssertSqlSafe(definition.create(
        &name.to_string(),
        &format!("{}.{}", definition.schema, definition.table),
        true,
    ))
}

/// `DROP INDEX CONCURRENTLY IF EXISTS schema.name` — outside a transaction.
pub fn drop_index_concurrently(schema: &Ident, name: &Ident) -> Statement {
    sqlx::AssertSqlSafe(format!("DROP INDEX CONCURRENTLY IF EXISTS {schema}.{name}"))
}

pub fn comment_on_index(schema: &Ident, name: &Ident, marker: &str) -> Statement {
    sqlx::AssertSqlSafe(format!("COMMENT ON INDEX {schema}.{name} IS {}", literal(marker)))
}

pub fn rename_index(schema: &Ident, from: &Ident, to: &Ident) -> Statement {
    sqlx::AssertSqlSafe(format!("ALTER INDEX {schema}.{from} RENAME TO {to}"))
}

/// The probe table: an empty temporary copy of the table's columns (types,
/// collations), on which the wanted index is created inside a transaction
/// that is rolled back, so PostgreSQL itself says how it would define it.
pub const PROBE_TABLE: &str = "tenantdb_index_probe";
pub const PROBE_INDEX: &str = "tenantdb_index_probe_idx";

/// `SET LOCAL ROLE tenant`: the probe runs as the tenant. Its temporary
/// table is then the tenant's, and PostgreSQL runs whatever the index
/// definition calls (casts and operators of the tenant's own types
/// included) as the table's owner inside a security-restricted operation —
/// as the tenant, unable to switch back. On a table the admin owned, that
/// code would run as the admin.
pub fn probe_as(role: &Ident) -> Statement {
    sqlx::AssertSqlSafe(format!("SET LOCAL ROLE {role}"))
}

pub fn create_probe_table(definition: &IndexDefinition) -> Statement {
    sqlx::AssertSqlSafe(format!(
        "CREATE TEMPORARY TABLE {PROBE_TABLE} (LIKE {}.{}) ON COMMIT DROP",
        definition.schema, definition.table
    ))
}

pub fn create_probe_index(definition: &IndexDefinition) -> Statement {
    sqlx::AssertSqlSafe(definition.create(PROBE_INDEX, &format!("pg_temp.{PROBE_TABLE}"), false))
}

/// The part of `pg_get_indexdef` output that defines an index apart from
/// its name and table — uniqueness, then everything from ` USING ` on — so
/// an index and its probe can be compared. Names tenantdb validates contain
/// no spaces, so the first ` USING ` is the method's.
pub fn normalized_definition(indexdef: &str) -> Option<String> {
    let unique = indexdef.starts_with("CREATE UNIQUE INDEX ");
    let at = indexdef.find(" USING ")?;
    Some(format!(
        "{}{}",
        if unique { "UNIQUE " } else { "" },
        &indexdef[at + 1..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(name: &str) -> Ident {
        Ident::parse(name).unwrap()
    }

    fn definition() -> IndexDefinition {
        IndexDefinition {
            schema: ident("public"),
            table: ident("orders"),
            unique: true,
            method: Method::Btree,
            keys: vec![
                IndexKey::Column {
                    column: ident("created_at"),
                    descending: Some(true),
                    nulls_first: Some(false),
                },
                IndexKey::Expression(IndexExpression::parse("lower(email)").unwrap()),
            ],
            include: vec![ident("total")],
            predicate: Some(IndexExpression::parse("deleted_at IS NULL").unwrap()),
        }
    }

    #[test]
    fn index_statements_quote_every_name_and_render_parsed_expressions() {
        assert_eq!(
            create_index_concurrently(&ident("orders_recent"), &definition()).0,
            "CREATE UNIQUE INDEX CONCURRENTLY \"orders_recent\" ON \"public\".\"orders\" USING btree \
             (\"created_at\" DESC NULLS LAST, (lower(email))) INCLUDE (\"total\") WHERE (deleted_at IS NULL)"
        );
        assert_eq!(
            drop_index_concurrently(&ident("public"), &ident("x")).0,
            "DROP INDEX CONCURRENTLY IF EXISTS \"public\".\"x\""
        );
        assert_eq!(
            create_probe_index(&definition()).0,
            "CREATE UNIQUE INDEX tenantdb_index_probe_idx ON pg_temp.tenantdb_index_probe USING btree \
             (\"created_at\" DESC NULLS LAST, (lower(email))) INCLUDE (\"total\") WHERE (deleted_at IS NULL)"
        );
    }

    #[test]
    fn normalized_definitions_drop_the_name_and_table() {
        assert_eq!(
            normalized_definition("CREATE UNIQUE INDEX a ON public.t USING btree (x) WHERE (y IS NULL)"),
            Some("UNIQUE USING btree (x) WHERE (y IS NULL)".into())
        );
        assert_eq!(
            normalized_definition(
                "CREATE INDEX tenantdb_index_probe_idx ON pg_temp_3.tenantdb_index_probe USING btree (x)"
            ),
            normalized_definition("CREATE INDEX \"Orders$1\" ON public.orders USING btree (x)")
        );
        assert_eq!(normalized_definition("garbage"), None);
    }
}
