//! Backstop's PostgreSQL side: the client tools ([`pg`]), the dump job
//! ([`dump`]), the physical base backup ([`basebackup`]) and restore into a
//! branch database ([`restore`]).
//!
//! Every SQL statement Backstop sends lives in one private module,
//! `server`, so that what the jobs may do to a server can be reviewed in one
//! place; [`pg`] re-exports the parts other crates use. The helpers below
//! are shared by the two jobs' configuration loading, so that both report a
//! bad setting the same way.

use backstop_core::config::ConfigError;

pub mod basebackup;
pub mod dump;
pub mod pg;
pub mod pitr;
mod replication;
pub mod restore;
mod server;
pub mod wal;

/// A setting that is present but unusable, naming the variable or option.
pub(crate) fn invalid(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::invalid(name, value, reason)
}

/// A required setting that is absent, with a hint of what to give
/// (`backstop_core::config::hint` where the core has one).
pub(crate) fn missing(name: &str, hint: &str) -> ConfigError {
    ConfigError::missing(name, hint)
}

/// How a key setting appears in error messages: armored key text is never
/// echoed (it may be a secret key), a `file:` or `gcpkms:` setting is.
pub(crate) fn shown_key_setting(setting: &str) -> String {
    if setting.trim_start().starts_with("-----") {
        "(inline key)".to_string()
    } else {
        setting.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_is_never_echoed() {
        assert_eq!(
            shown_key_setting("  -----BEGIN PGP PRIVATE KEY BLOCK-----"),
            "(inline key)"
        );
        assert_eq!(shown_key_setting("file:/k.asc"), "file:/k.asc");
    }
}
