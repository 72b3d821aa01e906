//! Index key expressions and partial-index predicates: parsed with a real
//! SQL parser (PostgreSQL dialect), accepted only when they are one plain
//! expression over the table's own columns — constants, operators, casts and
//! a documented allow-list of functions, no subqueries, no statement
//! separators, no comments — and then re-rendered from the syntax tree,
//! never spliced from the user's text.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, InTarget, Value, visit_expressions,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::Ident;

/// Functions an index expression may call: immutable ones, which is also
/// what PostgreSQL requires of index expressions.
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    "abs",
    "btrim",
    "ceil",
    "char_length",
    "coalesce",
    "date_trunc",
    "floor",
    "greatest",
    "jsonb_extract_path_text",
    "least",
    "left",
    "length",
    "lower",
    "ltrim",
    "md5",
    "nullif",
    "replace",
    "right",
    "round",
    "rtrim",
    "substr",
    "upper",
];

/// Why an expression was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExpressionError(pub String);

/// A validated expression, as rendered from its syntax tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexExpression(String);

impl IndexExpression {
    pub fn parse(text: &str) -> Result<Self, ExpressionError> {
        let refuse = |message: String| Err(ExpressionError(message));
        if text.contains("--") || text.contains("/*") {
            return refuse("comments are not allowed".into());
        }
        let dialect = PostgreSqlDialect {};
        let mut parser = Parser::new(&dialect)
            .try_with_sql(text)
            .map_err(|e| ExpressionError(format!("not a valid expression: {e}")))?;
        let expr = parser
            .parse_expr()
            .map_err(|e| ExpressionError(format!("not a valid expression: {e}")))?;
        let next = parser.peek_token().token;
        if next != Token::EOF {
            return refuse(format!(
                "unexpected `{next}` after the expression: only one plain expression is allowed"
            ));
        }
        let verdict = visit_expressions(&expr, |e| match allowed(e) {
            Ok(()) => ControlFlow::Continue(()),
            Err(reason) => ControlFlow::Break(reason),
        });
        if let ControlFlow::Break(reason) = verdict {
            return refuse(reason);
        }
        Ok(Self(expr.to_string()))
    }

    /// The expression as SQL, rendered from the parsed tree.
    pub fn as_sql(&self) -> &str {
        &self.0
    }
}

fn allowed(expr: &Expr) -> Result<(), String> {
    match expr {
        Expr::Identifier(ident) => Ident::parse(&ident.value)
            .map(drop)
            .map_err(|e| format!("column {:?} {e}", ident.value)),
        Expr::Value(value) if matches!(value.value, Value::Placeholder(_)) => {
            Err("parameters ($1) are not allowed".into())
        }
        Expr::Value(_)
        | Expr::BinaryOp { .. }
        | Expr::UnaryOp { .. }
        | Expr::Nested(_)
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsNotTrue(_)
        | Expr::IsNotFalse(_)
        | Expr::In {
            target: InTarget::List(_),
            ..
        }
        | Expr::Between { .. }
        | Expr::Like { .. }
        | Expr::ILike { .. }
        | Expr::Cast { .. } => Ok(()),
        Expr::Function(function) => {
            let name = function.name.to_string().to_lowercase();
            if !ALLOWED_FUNCTIONS.contains(&name.as_str()) {
                return Err(format!(
                    "function {name} is not allowed in an index (allowed: {})",
                    ALLOWED_FUNCTIONS.join(", ")
                ));
            }
            if function.filter.is_some() || function.over.is_some() || !function.within_group.is_empty() {
                return Err(format!("{name}: FILTER, OVER and WITHIN GROUP are not allowed"));
            }
            match &function.args {
                FunctionArguments::List(list)
                    if list.duplicate_treatment.is_none()
                        && list.clauses.is_empty()
                        && list
                            .args
                            .iter()
                            .all(|a| matches!(a, FunctionArg::Unnamed(FunctionArgExpr::Expr(_)))) =>
                {
                    Ok(())
                }
                _ => Err(format!("{name}: only plain arguments are allowed")),
            }
        }
        Expr::CompoundIdentifier(parts) => Err(format!(
            "qualified name {} is not allowed: name the table's own columns",
            parts
                .iter()
                .map(|p| p.value.as_str())
                .collect::<Vec<_>>()
                .join(".")
        )),
        Expr::Subquery(_)
        | Expr::Exists { .. }
        | Expr::In {
            target: InTarget::Subquery(_),
            ..
        } => Err("subqueries are not allowed".into()),
        other => Err(format!(
            "`{other}` is not allowed in an index: only columns, constants, operators, casts and the allowed functions"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_expressions_are_accepted_and_re_rendered() {
        for (text, rendered) in [
            ("lower(email)", "lower(email)"),
            ("LOWER( email )", "LOWER(email)"),
            (
                "coalesce(deleted_at, created_at)",
                "coalesce(deleted_at, created_at)",
            ),
            ("deleted_at IS NULL", "deleted_at IS NULL"),
            (
                "status IN ('open', 'paid') AND total > 0",
                "status IN ('open', 'paid') AND total > 0",
            ),
            ("date_trunc('day', created_at)", "date_trunc('day', created_at)"),
            ("(payload->>'kind')", "(payload ->> 'kind')"),
            ("amount::numeric > 10", "amount::NUMERIC > 10"),
        ] {
            assert_eq!(
                IndexExpression::parse(text).map(|e| e.0),
                Ok(rendered.to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn hostile_expressions_are_refused_with_a_reason() {
        for (text, reason) in [
            ("1; DROP TABLE orders", "only one plain expression"),
            ("lower(email); DELETE FROM users", "only one plain expression"),
            ("(SELECT 1)", "subqueries"),
            ("EXISTS (SELECT 1 FROM pg_authid)", "subqueries"),
            ("id IN (SELECT id FROM other)", "subqueries"),
            ("pg_sleep(10) IS NULL", "function pg_sleep is not allowed"),
            (
                "pg_read_file('/etc/passwd')",
                "function pg_read_file is not allowed",
            ),
            (
                "current_setting('is_superuser') = 'on'",
                "function current_setting is not allowed",
            ),
            ("random() > 0.5", "function random is not allowed"),
            ("count(*)", "function count is not allowed"),
            ("a -- trailing comment", "comments"),
            ("a /* inline */ IS NULL", "comments"),
            ("status = 'open", "not a valid expression"),
            ("'unbalanced", "not a valid expression"),
            ("DROP TABLE orders", "only one plain expression"),
            ("users.email IS NULL", "qualified name users.email"),
            ("$1 = 1", "parameters"),
            ("lower(email) FILTER (WHERE true)", "FILTER"),
            ("\"a;b\" IS NULL", "column \"a;b\""),
            ("", "not a valid expression"),
        ] {
            let error = IndexExpression::parse(text).expect_err(text);
            assert!(error.0.contains(reason), "{text}: {error}");
        }
    }
}
