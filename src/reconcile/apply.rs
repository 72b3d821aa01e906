//! Step four of the pipeline: run a plan's steps. Consecutive steps that may
//! share a transaction do; CREATE/DROP DATABASE run alone (PostgreSQL
//! forbids them in a transaction block); extensions run on a connection to
//! the tenant database. Every call has a client-side deadline
//! ([`super::deadline`]).

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::deadline::{self, within};
use super::desired::Desired;
use super::error::ReconcileError;
use super::plan::{Context, Step};

/// Runs `steps` in order; returns how many ran. Stops at the first failure:
/// the next reconcile observes what did happen and plans the rest.
pub async fn apply(
    admin: &mut PgConnection,
    tenant_db: &PgConnectOptions,
    desired: &Desired,
    steps: &[Step],
) -> Result<usize, ReconcileError> {
    let failed = |operation| super::db_error(desired, operation);
    let mut index = 0;
    while index < steps.len() {
        crate::kill_point!("apply.before_step");
        match steps[index].context() {
            Context::AdminTransaction => {
                let batch_end = steps[index..]
                    .iter()
                    .position(|s| s.context() != Context::AdminTransaction)
                    .map_or(steps.len(), |offset| index + offset);
                let mut tx = within(deadline::ANSWER, admin.begin())
                    .await
                    .map_err(failed("begin transaction"))?;
                for step in &steps[index..batch_end] {
                    execute(&mut tx, step).await.map_err(failed(operation(step)))?;
                }
                within(deadline::ANSWER, tx.commit())
                    .await
                    .map_err(failed("commit"))?;
                index = batch_end;
                crate::kill_point!("apply.after_step");
            }
            Context::AdminNoTransaction => {
                // Not in a transaction block: CREATE DATABASE and DROP DATABASE
                // refuse to run inside one.
                execute(admin, &steps[index])
                    .await
                    .map_err(failed(operation(&steps[index])))?;
                index += 1;
                crate::kill_point!("apply.after_step");
            }
            Context::TenantDatabase => {
                let batch_end = steps[index..]
                    .iter()
                    .position(|s| s.context() != Context::TenantDatabase)
                    .map_or(steps.len(), |offset| index + offset);
                let mut conn = crate::admin_access::connect(tenant_db)
                    .await
                    .map_err(failed("connect to the tenant database"))?;
                // One transaction: the extension schema and the extensions
                // installed into it appear together or not at all.
                let mut tx = within(deadline::ANSWER, conn.begin())
                    .await
                    .map_err(failed("begin transaction"))?;
                for step in &steps[index..batch_end] {
                    execute(&mut tx, step).await.map_err(failed(operation(step)))?;
                }
                within(deadline::ANSWER, tx.commit())
                    .await
                    .map_err(failed("commit"))?;
                within(deadline::ANSWER, conn.close())
                    .await
                    .map_err(failed("close the tenant database connection"))?;
                index = batch_end;
                crate::kill_point!("apply.after_step");
            }
        }
    }
    Ok(steps.len())
}

/// Runs one step within its deadline: [`deadline::LONG`] for the steps
/// that do real work on the server, [`deadline::ANSWER`] for the rest.
async fn execute(conn: &mut PgConnection, step: &Step) -> Result<(), sqlx::Error> {
    let limit = match step {
        Step::CreateDatabase { .. } | Step::DropDatabase { .. } | Step::CreateExtension { .. } => {
            deadline::LONG
        }
        _ => deadline::ANSWER,
    };
    if let Step::TerminateSessions { database, role } = step {
        let terminate = sqlx::query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE (datname = $1 OR usename = $2) AND pid <> pg_backend_pid()",
        )
        .bind(database.as_str())
        .bind(role.as_str())
        .execute(&mut *conn);
        within(limit, terminate).await?;
        return Ok(());
    }
    if let Some(statement) = step.statement() {
        within(limit, sqlx::query(statement).execute(&mut *conn)).await?;
    }
    Ok(())
}

/// A bounded name for the failed operation, for errors and metrics.
fn operation(step: &Step) -> &'static str {
    match step {
        Step::CreateRole { .. } => "create role",
        Step::AlterRole { .. } => "alter role",
        Step::SetPassword { .. } => "set password",
        Step::CommentOnRole { .. } => "mark role",
        Step::GrantRoleToAdmin { .. } => "grant role to admin",
        Step::CreateDatabase { .. } => "create database",
        Step::CommentOnDatabase { .. } => "mark database",
        Step::AlterDatabaseOwner { .. } => "set database owner",
        Step::AlterDatabaseConnectionLimit { .. } => "set database connection limit",
        Step::AlterDatabaseFlags { .. } => "reset database flags",
        Step::SetRoleSearchPath { .. } => "set role search path",
        Step::CreateExtensionSchema { .. } => "create extension schema",
        Step::GrantExtensionSchemaUsage { .. } => "grant extension schema usage",
        Step::RevokeConnect { .. } => "revoke connect",
        Step::GrantConnect { .. } => "grant connect",
        Step::SetRoleSetting { .. } => "set role setting",
        Step::ResetRoleSetting { .. } => "reset role setting",
        Step::CreateExtension { .. } => "create extension",
        Step::TerminateSessions { .. } => "terminate sessions",
        Step::DropDatabase { .. } => "drop database",
        Step::DropRole { .. } => "drop role",
    }
}
