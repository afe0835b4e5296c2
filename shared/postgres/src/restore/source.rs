//! The source database is never a restore target, told by **identity**,
//! not by URL text: an IP and a DNS name, an alias, or PgBouncer on 6432
//! in front of 5432 all reach the same cluster, so the servers are compared
//! by their `system_identifier` (`pg_control_system()`) and the database by
//! its name within that cluster.
//!
//! - `BACKSTOP_SOURCE_DATABASE_URL` set and reachable: a target on the
//!   source's cluster named like the source database or like the backed-up
//!   database is refused. When either side may not read
//!   `pg_control_system()` (superuser or `pg_monitor` needed), a target
//!   that holds tables and has one of those names is refused, saying why.
//! - Set but unreachable: a `--replace` of a same-named database is
//!   refused, with a message that says the source could not be checked.
//! - Not set: a `--replace` of a database named like the backed-up
//!   database is refused (Backstop cannot tell that it is not the source).

use tokio_postgres::Client;

use super::config::{RestoreConfig, SOURCE_DATABASE_URL_VAR, server_of};
use super::error::RestoreError;
use super::target::ResolvedTarget;
use crate::pg::{self, redact_url};
use crate::server::{self, Identity};

/// The source-database rules, from the configuration.
pub(super) struct SourceGuard<'a> {
    /// `BACKSTOP_SOURCE_DATABASE_URL`, when set.
    source_database_url: Option<&'a str>,
    replace: bool,
}

/// What is known of the source database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// `BACKSTOP_SOURCE_DATABASE_URL` is not set.
    NotSet,
    /// Set, but it could not be reached (the reason).
    Unreachable {
        url: String,
        name: String,
        reason: String,
    },
    /// Set and reached.
    Known { url: String, identity: Identity },
}

/// The target as the checks see it.
pub(super) struct TargetFacts<'a> {
    pub name: &'a str,
    /// The target server's `system_identifier`, if readable.
    pub system_identifier: Option<i64>,
    pub in_use: bool,
}

impl<'a> SourceGuard<'a> {
    pub(super) fn of(cfg: &'a RestoreConfig) -> Self {
        Self {
            source_database_url: cfg.source_database_url.as_deref(),
            replace: cfg.replace,
        }
    }

    /// Refuses, before any backup is read, a target whose URL spells the
    /// source's (same host, port and name): the cheap check; the identity
    /// check follows in [`Self::check`].
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

    /// Reaches the source (if configured) and reads its identity.
    async fn source(&self) -> Source {
        let Some(url) = self.source_database_url else {
            return Source::NotSet;
        };
        let shown = redact_url(url);
        let reached = async {
            let client = pg::connect(url).await?;
            server::identity(&client).await
        }
        .await;
        match reached {
            Ok(identity) => Source::Known {
                url: shown,
                identity,
            },
            Err(e) => Source::Unreachable {
                url: shown,
                name: pg::database_name(url).unwrap_or_default(),
                reason: e.to_string(),
            },
        }
    }

    /// Refuses a target that is (or may be) the source database, once the
    /// backup's database name (`backed_up`) and whether the target holds
    /// tables are known. `admin`: connected to the target's server.
    pub(super) async fn check(
        &self,
        admin: &Client,
        t: &ResolvedTarget,
        backed_up: &str,
        in_use: bool,
    ) -> Result<(), RestoreError> {
        let source = self.source().await;
        let system_identifier = match &source {
            Source::Known { .. } => server::identity(admin).await?.system_identifier,
            _ => None,
        };
        let facts = TargetFacts {
            name: &t.name,
            system_identifier,
            in_use,
        };
        decide(&source, &facts, backed_up, self.replace).map_err(|reason| RestoreError::Refused {
            database: t.name.clone(),
            reason,
        })
    }
}

/// The rules of the module documentation, on what is known. `Err`: why the
/// target is refused.
pub(super) fn decide(
    source: &Source,
    t: &TargetFacts<'_>,
    backed_up: &str,
    replace: bool,
) -> Result<(), String> {
    match source {
        Source::NotSet => {
            if replace && t.in_use && t.name == backed_up {
                return Err(format!(
                    "--replace would drop a database named like the backup's source database {backed_up:?}, and {SOURCE_DATABASE_URL_VAR} is not set, so Backstop cannot tell that this is not the source; set {SOURCE_DATABASE_URL_VAR} or restore into another name"
                ));
            }
        }
        Source::Unreachable { url, name, reason } => {
            if replace && t.in_use && (t.name == backed_up || t.name == name) {
                return Err(format!(
                    "the source database {SOURCE_DATABASE_URL_VAR}={url} could not be reached to check that this is not it ({reason}), and --replace would drop a database of the same name; retry when the source is reachable, or restore into another name"
                ));
            }
        }
        Source::Known { url, identity } => {
            let named_like = t.name == identity.database || t.name == backed_up;
            match (identity.system_identifier, t.system_identifier) {
                (Some(a), Some(b)) if a == b && named_like => {
                    return Err(format!(
                        "it is the source database (the same cluster, system identifier {a}, as {SOURCE_DATABASE_URL_VAR}={url}, and the name of the source or backed-up database); restore into another database"
                    ));
                }
                (Some(_), Some(_)) => {}
                _ if named_like && t.in_use => {
                    return Err(format!(
                        "it holds tables and is named like the source database, and Backstop cannot tell whether its server is the source's ({SOURCE_DATABASE_URL_VAR}={url}): reading pg_control_system() needs superuser or the pg_monitor role on both servers; grant it, or restore into another name"
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(sys: Option<i64>, db: &str) -> Source {
        Source::Known {
            url: "postgres://u@db/app".into(),
            identity: Identity {
                system_identifier: sys,
                database: db.into(),
            },
        }
    }

    fn target(name: &str, sys: Option<i64>, in_use: bool) -> TargetFacts<'_> {
        TargetFacts {
            name,
            system_identifier: sys,
            in_use,
        }
    }

    #[test]
    fn the_same_cluster_is_refused_whatever_the_url_says() {
        let src = known(Some(7), "app");
        // Same cluster (reached through another host name or PgBouncer):
        // the source's name and the backed-up database's name are refused,
        // empty or not.
        assert!(decide(&src, &target("app", Some(7), false), "app", false).is_err());
        assert!(decide(&src, &target("orders", Some(7), true), "orders", true).is_err());
        // Another cluster, or another name on the same cluster: fine.
        assert!(decide(&src, &target("app", Some(8), true), "app", true).is_ok());
        assert!(decide(&src, &target("br_x_1", Some(7), true), "app", true).is_ok());
    }

    #[test]
    fn unknown_identity_refuses_a_same_named_database_with_tables() {
        let src = known(None, "app");
        let err = decide(&src, &target("app", Some(7), true), "app", false).unwrap_err();
        assert!(err.contains("pg_monitor"), "{err}");
        assert!(decide(&src, &target("app", None, false), "app", false).is_ok());
        assert!(decide(&src, &target("other", None, true), "app", true).is_ok());
    }

    #[test]
    fn an_unreachable_source_blocks_a_same_named_replace() {
        let src = Source::Unreachable {
            url: "postgres://u@db/app".into(),
            name: "app".into(),
            reason: "connection refused".into(),
        };
        let err = decide(&src, &target("app", None, true), "orders", true).unwrap_err();
        assert!(err.contains("could not be reached"), "{err}");
        assert!(decide(&src, &target("orders", None, true), "orders", true).is_err());
        assert!(decide(&src, &target("app", None, true), "orders", false).is_ok());
        assert!(decide(&src, &target("other", None, true), "orders", true).is_ok());
    }

    #[test]
    fn without_the_source_url_a_namesake_is_not_replaced() {
        let none = Source::NotSet;
        assert!(decide(&none, &target("orders", None, true), "orders", true).is_err());
        assert!(decide(&none, &target("orders", None, false), "orders", true).is_ok());
        assert!(decide(&none, &target("billing", None, true), "orders", true).is_ok());
        assert!(decide(&none, &target("orders", None, true), "orders", false).is_ok());
    }
}
