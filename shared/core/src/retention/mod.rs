//! Retention and audit: prune both clouds by policy, and report on
//! everything that could make a backup useless when it is needed.
//!
//! The flow of one run, per bucket:
//!
//! 1. [`collect`]: list the whole bucket ([`ObjectStoreExt::list_all`]) and
//!    verify every complete backup's signed manifest (an injected
//!    [`ManifestVerifier`]). A failed listing or a transient read failure:
//!    no [`Inventory`], so nothing is planned or deleted. A backup that can
//!    never be read (an oversized manifest) is recorded as invalid instead.
//! 2. [`plan()`]: pure and deterministic, from the inventory, the
//!    [`PolicySet`] and the clock. The plan module's docs list the safety rules.
//! 3. [`apply`]: delete in order (manifest, signature, data), stopping a
//!    backup at its first failed delete; dry-run deletes nothing.
//! 4. [`audit()`]: one [`Report`] over both clouds (JSON and a readable
//!    summary).
//!
//! [`ObjectStoreExt::list_all`]: crate::store::ObjectStoreExt::list_all

mod audit;
mod drills;
mod execute;
mod health;
mod inventory;
mod plan;
mod policy;
mod uploads;
mod verify;
mod wal_inventory;
mod wal_plan;

#[cfg(test)]
mod future_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod quiet_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
pub(crate) mod testutil;
#[cfg(test)]
mod wal_tests;

pub use audit::{
    AuditInput, BucketConfig, BucketConfigError, CloudInput, Finding, LifecycleRule, Report,
    Severity, audit, lifecycle_findings,
};
pub use drills::load_drills;
pub use execute::{
    ApplyReport, DEFAULT_VERIFY_CONCURRENCY, DeleteFailure, Pruned, apply, collect, prune,
};
pub use health::{
    CodeCount, Condition, Health, NamespaceHealth, Newest, SeriesAge, SeverityCounts, summarize,
};
pub use inventory::{
    BackupEntry, BackupObjects, InvalidKind, Inventory, ManifestVerifier, NoVerifier, SeriesKey,
    Verification,
};
pub use plan::{
    BackupPlan, BackupStatus, Decision, DeleteOp, DeleteReason, HoldReason, Plan, SeriesPlan, plan,
};
pub use policy::{
    DEFAULT_MAX_CLOCK_SKEW_SECS, MAX_CLOCK_SKEW_ENV, NamespacePattern, NamespaceRule, POLICY_ENV,
    PolicyError, PolicySet, RetentionPolicy, format_age, parse_duration,
};
pub use uploads::check_open_uploads;
pub use verify::SignatureVerifier;
pub use wal_inventory::{
    BaseNeed, ClusterKey, ClusterWal, WalEntry, WalInvalidKind, WalVerification,
};
pub use wal_plan::{WalDecision, WalDeleteOp, WalDeleteReason, WalFilePlan, WalPlan};

use chrono::{DateTime, Utc};

use crate::drill::DrillRecord;

/// Plans both inventories and audits them, without touching any store.
pub fn plan_and_audit(
    policies: &PolicySet,
    now: DateTime<Utc>,
    primary: (&str, &Inventory),
    replica: Option<(&str, &Inventory)>,
    drills: &[DrillRecord],
) -> (Plan, Option<Plan>, Report) {
    let primary_plan = plan(primary.1, policies, now);
    let replica_plan = replica.map(|(_, inv)| plan(inv, policies, now));
    let report = audit(&AuditInput {
        now,
        policies,
        primary: CloudInput::listed(primary.0, primary.1).with_plan(&primary_plan),
        replica: replica
            .zip(replica_plan.as_ref())
            .map(|((cloud, inv), p)| CloudInput::listed(cloud, inv).with_plan(p)),
        drills,
        extra_findings: Vec::new(),
    });
    (primary_plan, replica_plan, report)
}
