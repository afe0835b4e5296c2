//! Where the restore writes, and the guarantees around it: the source
//! database is never a target, a non-empty target is only replaced on
//! request, and whatever the restore created is dropped again when it
//! fails, so a failed restore leaves the server as it was.
//!
//! A missing database is created; an existing one must hold no user table
//! unless `replace` is set. A replacement restores into a staging database
//! and swaps it in only after the restore and the drill succeeded.
//!
//! The source checks: a target named like the backup's database on the
//! server of `BACKSTOP_SOURCE_DATABASE_URL` is refused; without that
//! variable, a replacement of a database named like the backup's database
//! is refused (Backstop cannot tell that it is not the source).

use tokio_postgres::Client;

use backstop_core::manifest::Manifest;

use super::config::{
    Progress, RestoreConfig, SOURCE_DATABASE_URL_VAR, Target, check_database_name, server_of,
};
use super::error::{RestoreError, pg_err};
use crate::invalid;
use crate::pg::{self, PgError, redact_url};
use crate::server;

/// A [`Target`] as URLs and a checked database name.
pub(super) struct ResolvedTarget {
    /// Connects to a maintenance database of the server (create, drop).
    pub admin_url: String,
    pub url: String,
    pub name: String,
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
        },
    };
    check_database_name(&t.name).map_err(|reason| RestoreError::Refused {
        database: t.name.clone(),
        reason,
    })?;
    Ok(t)
}

/// The source-database rules, from the configuration.
pub(super) struct SourceGuard<'a> {
    /// `BACKSTOP_SOURCE_DATABASE_URL`, when set.
    source_database_url: Option<&'a str>,
    replace: bool,
}

impl<'a> SourceGuard<'a> {
    pub(super) fn of(cfg: &'a RestoreConfig) -> Self {
        Self {
            source_database_url: cfg.source_database_url.as_deref(),
            replace: cfg.replace,
        }
    }

    /// Refuses, before any backup is read, a target that is the database
    /// of `BACKSTOP_SOURCE_DATABASE_URL` itself (same server, same name).
    pub(super) fn refuse_source_database(&self, t: &ResolvedTarget) -> Result<(), RestoreError> {
        if let Some(source) = self.source_database_url
            && server_of(source).is_some()
            && server_of(source) == server_of(&t.url)
            && pg::database_name(source).ok().as_ref() == Some(&t.name)
        {
            return Err(RestoreError::Refused {
                database: t.name.clone(),
                reason: format!(
                    "it is the source database {SOURCE_DATABASE_URL_VAR}={}",
                    redact_url(source)
                ),
            });
        }
        Ok(())
    }

    /// Refuses targets that are (or may be) the backup's source database,
    /// once the backup's database name (`backed_up`) and whether the target
    /// holds tables are known.
    fn check(
        &self,
        t: &ResolvedTarget,
        backed_up: &str,
        target_in_use: bool,
    ) -> Result<(), RestoreError> {
        let refuse = |reason: String| {
            Err(RestoreError::Refused {
                database: t.name.clone(),
                reason,
            })
        };
        match self.source_database_url {
            Some(source) => {
                let source_name = pg::database_name(source).ok();
                let same_server =
                    server_of(source).is_some() && server_of(source) == server_of(&t.url);
                if same_server && (Some(&t.name) == source_name.as_ref() || t.name == backed_up) {
                    return refuse(format!(
                        "it is the source database (same server as {SOURCE_DATABASE_URL_VAR}={} and the name of the backed-up database); restore into another database",
                        redact_url(source)
                    ));
                }
            }
            None => {
                if self.replace && target_in_use && t.name == backed_up {
                    return refuse(format!(
                        "--replace would drop a database named like the backup's source database {backed_up:?}, and {SOURCE_DATABASE_URL_VAR} is not set, so Backstop cannot tell that this is not the source; set {SOURCE_DATABASE_URL_VAR} or restore into another name"
                    ));
                }
            }
        }
        Ok(())
    }
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
    SourceGuard::of(cfg).check(t, &manifest.database, in_use)?;
    let plan = match (exists, in_use) {
        (false, _) => {
            server::create_database(&admin, &t.name).await?;
            tracing::info!(event = "restore_created_database", database = %t.name, "created the target database");
            Plan::Direct { created: true }
        }
        // Parallel jobs are not one transaction: an existing (empty) target
        // is restored through a staging database too, so a failure leaves
        // it as it was.
        (true, false) if cfg.jobs <= 1 => Plan::Direct { created: false },
        (true, false) => Plan::Staging {
            staging: create_staging(&admin).await?,
        },
        (true, true) if cfg.replace => Plan::Staging {
            staging: create_staging(&admin).await?,
        },
        (true, true) => {
            return Err(RestoreError::Refused {
                database: t.name.clone(),
                reason: "it already holds tables; pass --replace to replace it (it is swapped only after a successful restore and drill)".into(),
            });
        }
    };
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

/// Creates a staging database with a random name, and returns the name.
async fn create_staging(admin: &Client) -> Result<String, RestoreError> {
    let staging = format!(
        "backstop_restore_{:012x}",
        rand::random::<u64>() & 0xffff_ffff_ffff
    );
    server::create_database(admin, &staging).await?;
    Ok(staging)
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

    #[test]
    fn the_source_database_is_never_a_target() {
        let guard = SourceGuard {
            source_database_url: Some("postgres://u:pw@127.0.0.1/app"),
            replace: false,
        };
        let refused = |r: Result<(), RestoreError>| matches!(r, Err(RestoreError::Refused { .. }));
        let same = on("postgres://x@localhost:5432/app");
        assert!(refused(guard.refuse_source_database(&same)));
        assert!(
            guard
                .refuse_source_database(&on("postgres://x@localhost/other"))
                .is_ok()
        );
        assert!(
            guard
                .refuse_source_database(&on("postgres://x@db2/app"))
                .is_ok()
        );
        // Named like the backed-up database, on the source's server.
        let named_like = on("postgres://x@localhost/orders");
        assert!(refused(guard.check(&named_like, "orders", false)));
        assert!(guard.check(&named_like, "billing", true).is_ok());
        assert!(
            guard
                .check(&on("postgres://x@db2/orders"), "orders", true)
                .is_ok()
        );
        let err = guard.check(&same, "billing", false).unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn without_the_source_url_a_namesake_is_not_replaced() {
        let guard = SourceGuard {
            source_database_url: None,
            replace: true,
        };
        let t = on("postgres://x@db/orders");
        assert!(guard.refuse_source_database(&t).is_ok());
        assert!(matches!(
            guard.check(&t, "orders", true),
            Err(RestoreError::Refused { .. })
        ));
        assert!(
            guard.check(&t, "orders", false).is_ok(),
            "empty: nothing to lose"
        );
        assert!(guard.check(&t, "billing", true).is_ok());
        let keep = SourceGuard {
            replace: false,
            ..guard
        };
        assert!(
            keep.check(&t, "orders", true).is_ok(),
            "refused later: not empty"
        );
    }
}
