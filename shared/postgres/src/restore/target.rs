//! Where the restore writes, and the guarantees around it: the source
//! database is never a target, a non-empty target is only replaced on
//! request, and whatever the restore created is dropped again when it
//! fails, so a failed restore leaves the server as it was.
//!
//! A missing database is created; an existing one must hold no user table
//! unless `replace` is set. A replacement restores into a staging database
//! and swaps it in only after the restore and the drill succeeded.
//!
//! A branch target (`--branch`) is a database Backstop named and marked
//! (a `COMMENT ON DATABASE` with the branch name) when it created it: an
//! existing database is restored into, or replaced, only when it carries
//! the marking of the same branch.
//!
//! The source checks live in `source`.

use tokio_postgres::Client;

use backstop_core::manifest::Manifest;

use super::config::{
    Progress, RestoreConfig, Target, branch_marking, check_database_name, database_for_branch,
};
use super::error::{RestoreError, pg_err};
use super::source::SourceGuard;
use crate::invalid;
use crate::pg::{self, PgError, redact_url};
use crate::server;

/// A [`Target`] as URLs and a checked database name.
pub(super) struct ResolvedTarget {
    /// Connects to a maintenance database of the server (create, drop).
    pub admin_url: String,
    pub url: String,
    pub name: String,
    /// The branch, for a branch target.
    pub branch: Option<String>,
}

pub(super) fn resolve(target: &Target) -> Result<ResolvedTarget, RestoreError> {
    let bad = |what: &str, url: &str, e: PgError| {
        RestoreError::Config(invalid(what, &redact_url(url), e.to_string()))
    };
    let t = match target {
        Target::Url(url) => {
            let name = pg::database_name(url).map_err(|e| bad("--target-url", url, e))?;
            ResolvedTarget {
                admin_url: pg::with_database(url, "postgres")
                    .map_err(|e| bad("--target-url", url, e))?,
                url: url.clone(),
                name,
                branch: None,
            }
        }
        Target::OnServer {
            server_url,
            database,
        } => ResolvedTarget {
            admin_url: server_url.clone(),
            url: pg::with_database(server_url, database)
                .map_err(|e| bad("--server-url", server_url, e))?,
            name: database.clone(),
            branch: None,
        },
        Target::Branch { server_url, branch } => {
            let database = database_for_branch(branch);
            ResolvedTarget {
                admin_url: server_url.clone(),
                url: pg::with_database(server_url, &database)
                    .map_err(|e| bad("--server-url", server_url, e))?,
                name: database,
                branch: Some(branch.clone()),
            }
        }
    };
    check_database_name(&t.name).map_err(|reason| RestoreError::Refused {
        database: t.name.clone(),
        reason,
    })?;
    Ok(t)
}

/// How the restore writes into the target.
enum Plan {
    /// Into the target itself (it is new or empty); `created`: we created it
    /// and drop it again on failure.
    Direct { created: bool },
    /// Into a staging database, swapped in after success.
    Staging { staging: String },
}

/// A target ready to be restored into.
pub(super) struct Prepared {
    /// Connected to the server's maintenance database (create, drop, rename).
    admin: Client,
    /// The target database's name.
    name: String,
    plan: Plan,
    /// Where `pg_restore` writes: the target, or the staging database.
    pub db_url: String,
}

/// Checks the target (exists? holds tables? the source?) and creates the
/// database the restore writes into.
pub(super) async fn prepare(
    cfg: &RestoreConfig,
    t: &ResolvedTarget,
    manifest: &Manifest,
) -> Result<Prepared, RestoreError> {
    let admin = pg::connect(&t.admin_url).await.map_err(pg_err(format!(
        "connect to the server of {} to create the target database",
        t.name
    )))?;
    let exists = server::database_exists(&admin, &t.name).await?;
    let in_use = if exists {
        let client = pg::connect(&t.url)
            .await
            .map_err(pg_err("connect to the target database"))?;
        server::user_table_count(&client).await? > 0
    } else {
        false
    };
    SourceGuard::of(cfg)
        .check(&admin, t, &manifest.database, in_use)
        .await?;
    if exists {
        check_branch_marking(&admin, t).await?;
    }
    let plan = choose_plan(cfg, &admin, t, exists, in_use).await?;
    let db_url = match &plan {
        Plan::Direct { .. } => t.url.clone(),
        Plan::Staging { staging } => {
            pg::with_database(&t.url, staging).map_err(pg_err("staging database URL"))?
        }
    };
    Ok(Prepared {
        admin,
        name: t.name.clone(),
        plan,
        db_url,
    })
}

/// How the restore writes, creating what it writes into.
async fn choose_plan(
    cfg: &RestoreConfig,
    admin: &Client,
    t: &ResolvedTarget,
    exists: bool,
    in_use: bool,
) -> Result<Plan, RestoreError> {
    let branch = t.branch.as_deref();
    Ok(match (exists, in_use) {
        (false, _) => {
            create_marked(admin, &t.name, branch).await?;
            tracing::info!(event = "restore_created_database", database = %t.name, "created the target database");
            Plan::Direct { created: true }
        }
        // Parallel jobs are not one transaction: an existing (empty) target
        // is restored through a staging database too, so a failure leaves
        // it as it was.
        (true, false) if cfg.jobs <= 1 => Plan::Direct { created: false },
        (true, false) => Plan::Staging {
            staging: create_staging(admin, branch).await?,
        },
        (true, true) if cfg.replace => Plan::Staging {
            staging: create_staging(admin, branch).await?,
        },
        (true, true) => {
            return Err(RestoreError::Refused {
                database: t.name.clone(),
                reason: "it already holds tables; pass --replace to replace it (it is swapped only after a successful restore and drill)".into(),
            });
        }
    })
}

/// Creates database `name`, marked for `branch` when it is a branch's (the
/// marking moves with a staging database when it is renamed).
async fn create_marked(
    admin: &Client,
    name: &str,
    branch: Option<&str>,
) -> Result<(), RestoreError> {
    server::create_database(admin, name).await?;
    if let Some(b) = branch
        && let Err(e) = server::set_database_comment(admin, name, &branch_marking(b)).await
    {
        let _ = server::drop_database(admin, name).await;
        return Err(e.into());
    }
    Ok(())
}

/// Creates a staging database with a random name, and returns the name.
async fn create_staging(admin: &Client, branch: Option<&str>) -> Result<String, RestoreError> {
    let staging = format!(
        "backstop_restore_{:012x}",
        rand::random::<u64>() & 0xffff_ffff_ffff
    );
    create_marked(admin, &staging, branch).await?;
    Ok(staging)
}

/// An existing branch database must carry the marking of the same branch:
/// Backstop never restores a branch into, or replaces, a database it did
/// not create for that branch.
async fn check_branch_marking(admin: &Client, t: &ResolvedTarget) -> Result<(), RestoreError> {
    let Some(branch) = &t.branch else {
        return Ok(());
    };
    let comment = server::database_comment(admin, &t.name).await?;
    let want = branch_marking(branch);
    if comment.as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    let found = match &comment {
        Some(c) => format!("its comment is {c:?}"),
        None => "it has no Backstop marking".to_string(),
    };
    Err(RestoreError::Refused {
        database: t.name.clone(),
        reason: format!(
            "it exists but was not created by Backstop for branch {branch:?} ({found}); a branch restore only writes into, or replaces, a database marked for the same branch. Drop or rename it, or restore with --target-db"
        ),
    })
}

impl Prepared {
    /// The restore created the target database.
    pub(super) fn created(&self) -> bool {
        matches!(self.plan, Plan::Direct { created: true })
    }

    /// Drops the database created for this restore, if any (never a
    /// database that existed before); a failure is logged, not returned,
    /// since the restore has failed already.
    pub(super) async fn discard(&self, why: &str) {
        let drop_it = match &self.plan {
            Plan::Direct { created: true } => Some(self.name.as_str()),
            Plan::Staging { staging } => Some(staging.as_str()),
            Plan::Direct { created: false } => None,
        };
        if let Some(name) = drop_it
            && let Err(e) = server::drop_database(&self.admin, name).await
        {
            tracing::error!(event = "restore_cleanup_failed", database = name, error = %e, why, "could not drop the database created for the restore");
        }
    }

    /// Completes a [`RestoreError::CommittedUnverified`] with what became of
    /// the database (after [`Self::discard`]); other errors pass unchanged.
    pub(super) fn with_cleanup_note(&self, e: RestoreError) -> RestoreError {
        match e {
            RestoreError::CommittedUnverified {
                database, reason, ..
            } => {
                let cleanup = if matches!(self.plan, Plan::Direct { created: false }) {
                    ": DROP IT or restore again with --replace".to_string()
                } else {
                    " (it was created for this restore and has been dropped)".to_string()
                };
                RestoreError::CommittedUnverified {
                    database,
                    reason,
                    cleanup,
                }
            }
            e => e,
        }
    }

    /// After the drill: swaps a staging database in when the drill passed
    /// (returns whether the target was replaced), drops it when not.
    pub(super) async fn finish(
        &self,
        drill_passed: bool,
        progress: &dyn Progress,
    ) -> Result<bool, RestoreError> {
        match &self.plan {
            Plan::Staging { staging } if drill_passed => {
                progress.phase("swapping in the restored database");
                server::drop_database(&self.admin, &self.name).await?;
                server::rename_database(&self.admin, staging, &self.name).await?;
                Ok(true)
            }
            Plan::Staging { .. } => {
                // The drill failed: keep the old database.
                self.discard("drill failed; the target keeps its old contents")
                    .await;
                Ok(false)
            }
            Plan::Direct { .. } => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(url: &str) -> ResolvedTarget {
        resolve(&Target::Url(url.into())).unwrap()
    }

    #[test]
    fn targets_resolve_to_urls_and_a_checked_name() {
        let t = on("postgres://u:pw@h:5433/app?sslmode=disable");
        assert_eq!(t.name, "app");
        assert_eq!(
            t.admin_url,
            "postgres://u:pw@h:5433/postgres?sslmode=disable"
        );
        let t = resolve(&Target::OnServer {
            server_url: "postgres://u@h/postgres".into(),
            database: "feature x".into(),
        })
        .unwrap();
        assert_eq!(t.url, "postgres://u@h/feature%20x");
        assert_eq!(t.admin_url, "postgres://u@h/postgres");
        assert!(matches!(
            resolve(&Target::Url("postgres://u@h/template1".into())),
            Err(RestoreError::Refused { .. })
        ));
        assert!(matches!(
            resolve(&Target::Url("not a url".into())),
            Err(RestoreError::Config(_))
        ));
    }
}
