//! The WAL archive's inventory, plan, deletes and audit findings.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::execute::{DEFAULT_VERIFY_CONCURRENCY, apply, collect};
use super::inventory::{InvalidKind, Inventory};
use super::plan::{Decision, Plan, plan};
use super::policy::PolicySet;
use super::testutil::{
    Kind, MarkerVerifier, MemStore, SEG, WalSpec, WalState, base_id, base_info, bid,
    inventory_with_wal, populate, populate_wal, wal_key,
};
use super::wal_inventory::WalVerification;
use super::wal_plan::{WalDecision, WalDeleteReason, WalPlan};
use super::{Report, Severity, plan_and_audit};
use crate::wal::WalFile;

type History = Vec<(crate::naming::BackupId, Kind)>;
type Files = Vec<(String, DateTime<Utc>)>;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
}

fn seg(tli: u32, n: u64) -> String {
    WalFile::segment(tli, n, SEG).to_string()
}

/// Segments `from..to` of timeline 1, archived a minute apart up to `last`
/// (the newest).
fn segments(from: u64, to: u64, last: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
    (from..to)
        .map(|n| (seg(1, n), last - TimeDelta::minutes((to - 1 - n) as i64)))
        .collect()
}

fn specs<'a>(
    ns: &'a str,
    files: &'a [(String, DateTime<Utc>)],
    state: WalState,
) -> Vec<WalSpec<'a>> {
    files
        .iter()
        .map(|(n, t)| (ns, n.as_str(), *t, state))
        .collect()
}

/// Keeps the two newest base backups in `production`.
fn policies() -> PolicySet {
    PolicySet::from_json(
        r#"{"rules":[
          {"match":"production","protected":true,"replicated":true,"keep_daily":7,
           "stale_after":"26h","base_backups":{"keep_last":2}},
          {"match":"*","keep_last":2,"abandon_after":"14d","stale_after":"8d"}]}"#,
    )
    .unwrap()
}

fn wal_plan<'a>(p: &'a Plan, ns: &str) -> &'a WalPlan {
    p.wal
        .iter()
        .find(|w| w.cluster.namespace.as_str() == ns)
        .expect("a WAL plan for the namespace")
}

fn decision(p: &Plan, ns: &str, name: &str) -> WalDecision {
    wal_plan(p, ns).file(name).expect(name).decision.clone()
}

fn codes(r: &Report, code: &str) -> Vec<(Severity, String)> {
    r.with_code(code)
        .map(|f| (f.severity, f.message.clone()))
        .collect()
}

/// Three daily base backups starting at segments 0x10, 0x20, 0x30, and
/// segments 0x08..0x40 archived: the two newest are kept, so WAL from 0x20.
fn three_base_backups() -> (History, Files) {
    let t = now();
    let bases = vec![
        (
            base_id("production", t - TimeDelta::days(2), 0x10),
            Kind::ok(),
        ),
        (
            base_id("production", t - TimeDelta::days(1), 0x20),
            Kind::ok(),
        ),
        (
            base_id("production", t - TimeDelta::hours(1), 0x30),
            Kind::ok(),
        ),
    ];
    (bases, segments(0x08, 0x40, t - TimeDelta::minutes(5)))
}

#[test]
fn wal_objects_are_inventoried_by_cluster_not_as_foreign() {
    let (bases, files) = three_base_backups();
    let mut wal = specs("production", &files, WalState::Committed);
    wal.push(("production", "00000002.history", now(), WalState::Committed));
    let inv = inventory_with_wal("gs://p", &bases, &wal);
    assert!(inv.foreign.is_empty(), "{:?}", inv.foreign);
    assert_eq!(inv.wal.len(), 1);
    let cluster = inv.wal.values().next().unwrap();
    assert_eq!(cluster.files.len(), files.len() + 1);
    assert!(cluster.files.values().all(|e| e.manifest().is_some()));

    // Keys that look like WAL but are not canonical stay foreign.
    let odd = [
        "production/.wal/7312345678901234567/00000002/000000010000000000000005.json",
        "production/.wal/07312345678901234567/00000001/000000010000000000000005.json",
        "production/.wal/7312345678901234567/00000001/000000010000000000000005.pgp",
        "production/.wal/7312345678901234567/00000001/notes.txt",
    ];
    let listing = odd
        .iter()
        .map(|k| crate::store::ObjectMeta {
            key: k.to_string(),
            ..Default::default()
        })
        .collect();
    let inv = Inventory::from_listing("gs://p", listing);
    assert_eq!(inv.foreign.len(), odd.len());
    assert!(inv.wal.is_empty());
}

#[test]
fn wal_is_kept_from_the_oldest_kept_base_backup_and_older_wal_is_deleted() {
    let (bases, files) = three_base_backups();
    let mut wal = specs("production", &files, WalState::Committed);
    wal.push((
        "production",
        "000000010000000000000009.partial",
        now(),
        WalState::Committed,
    ));
    let backup_file = "000000010000000000000010.00000028.backup";
    wal.push(("production", backup_file, now(), WalState::Committed));
    wal.push(("production", "00000002.history", now(), WalState::Committed));
    let inv = inventory_with_wal("gs://p", &bases, &wal);
    let p = plan(&inv, &policies(), now());
    // The oldest base backup goes; the other two, and their WAL, stay.
    assert!(p.decision(&bases[0].0).unwrap().decision.is_delete(), "{p}");
    assert!(
        !p.decision(&bases[1].0).unwrap().decision.is_delete(),
        "{p}"
    );
    let w = wal_plan(&p, "production");
    assert_eq!(w.keep_from.as_deref(), Some(seg(1, 0x20).as_str()));
    for n in 0x08..0x40 {
        let d = decision(&p, "production", &seg(1, n));
        let deleted = matches!(
            d,
            WalDecision::Delete {
                reason: WalDeleteReason::BeforeOldestBaseBackup
            }
        );
        assert_eq!(deleted, n < 0x20, "{} {d:?}", seg(1, n));
    }
    for name in ["000000010000000000000009.partial", backup_file] {
        assert!(matches!(
            decision(&p, "production", name),
            WalDecision::Delete { .. }
        ));
    }
    assert!(matches!(
        decision(&p, "production", "00000002.history"),
        WalDecision::Keep { .. }
    ));
    // Manifest first, then the data.
    let op = p
        .wal_deletes
        .iter()
        .find(|op| op.file.ends_with(&seg(1, 8)))
        .unwrap();
    let key = wal_key("production", &seg(1, 8));
    assert_eq!(op.keys[0], key.manifest_key());
    assert_eq!(
        op.keys[1],
        format!("{}{}", key.dir(), key.data_name("0000000a"))
    );
}

#[test]
fn never_deletes_wal_a_kept_base_backup_needs_even_on_another_timeline() {
    // The newest base backup is on timeline 2 and starts lower than an
    // older kept one on timeline 1 (a clone restored and promoted): the
    // cutoff is the lowest start of all kept base backups.
    let t = now();
    let old = base_id("production", t - TimeDelta::days(1), 0x30);
    let newer = base_id("production", t - TimeDelta::hours(2), 0x18);
    let mut inv = inventory_with_wal(
        "gs://p",
        &[(old.clone(), Kind::ok()), (newer.clone(), Kind::ok())],
        &[],
    );
    let mut m = super::testutil::manifest_for(&newer, 1000, 0);
    m.base_backup = Some(base_info(super::testutil::SYSID, 2, 0x18, 0x19));
    inv.set_verification(
        &newer,
        super::inventory::Verification::Verified {
            manifest: Box::new(m),
        },
    );
    let names: Vec<String> = (0x10..0x40)
        .map(|n| seg(1, n))
        .chain((0x10..0x20).map(|n| seg(2, n)))
        .collect();
    let wal: Vec<WalSpec> = names
        .iter()
        .map(|n| ("production", n.as_str(), t, WalState::Committed))
        .collect();
    let wal_inv = inventory_with_wal("gs://p", &[], &wal);
    inv.wal = wal_inv.wal;
    let p = plan(&inv, &policies(), now());
    for name in &names {
        let file = WalFile::parse(name).unwrap();
        let n = file.segment_number(SEG).unwrap();
        let deleted = matches!(decision(&p, "production", name), WalDecision::Delete { .. });
        assert_eq!(deleted, n < 0x18, "{name}");
    }
}

#[test]
fn no_base_backup_means_nothing_is_deleted() {
    let files = segments(0, 0x20, now());
    let mut wal = specs("production", &files, WalState::Committed);
    wal.push((
        "production",
        &files[0].0,
        now() - TimeDelta::days(3),
        WalState::Committed,
    ));
    let inv = inventory_with_wal("gs://p", &[], &wal);
    let p = plan(&inv, &policies(), now());
    assert!(p.wal_deletes.is_empty(), "{p}");
    assert_eq!(wal_plan(&p, "production").keep_from, None);
    // Nor with only invalid base backups, nor with one in progress.
    let (bases, files) = three_base_backups();
    let wal = specs("production", &files, WalState::Committed);
    let bad: Vec<_> = bases
        .iter()
        .map(|(id, _)| (id.clone(), Kind::Invalid(InvalidKind::BadSignature)))
        .collect();
    let p = plan(
        &inventory_with_wal("gs://p", &bad, &wal),
        &policies(),
        now(),
    );
    assert!(p.wal_deletes.is_empty(), "{p}");
    let mut in_progress = bases.clone();
    in_progress.push((
        base_id("production", now() - TimeDelta::minutes(10), 0x3e),
        Kind::data_only(),
    ));
    let p = plan(
        &inventory_with_wal("gs://p", &in_progress, &wal),
        &policies(),
        now(),
    );
    assert!(p.wal_deletes.is_empty(), "{p}");
}

#[test]
fn uncommitted_data_objects_go_after_the_grace_and_invalid_files_are_held() {
    let (bases, files) = three_base_backups();
    let mut wal = specs("production", &files, WalState::Committed);
    let (old, young) = (now() - TimeDelta::days(2), now() - TimeDelta::hours(2));
    let (a, b, c, d) = (seg(1, 0x40), seg(1, 0x41), seg(1, 0x42), seg(1, 0x43));
    wal.extend([
        ("production", a.as_str(), old, WalState::Retried),
        ("production", b.as_str(), old, WalState::DataOnly),
        ("production", c.as_str(), young, WalState::DataOnly),
        ("production", d.as_str(), old, WalState::Invalid),
    ]);
    let inv = inventory_with_wal("gs://p", &bases, &wal);
    let p = plan(&inv, &policies(), now());
    let w = wal_plan(&p, "production");
    let key = |name: &str, nonce: &str| {
        let k = wal_key("production", name);
        format!("{}{}", k.dir(), k.data_name(nonce))
    };
    assert_eq!(w.file(&a).unwrap().uncommitted, vec![key(&a, "0000000b")]);
    assert_eq!(w.file(&b).unwrap().uncommitted, vec![key(&b, "0000000a")]);
    assert!(w.file(&c).unwrap().uncommitted.is_empty());
    assert!(matches!(
        w.file(&d).unwrap().decision,
        WalDecision::Hold { .. }
    ));
    assert!(w.file(&d).unwrap().uncommitted.is_empty());
    let (_, _, report) = plan_and_audit(&policies(), now(), ("gcs", &inv), None, &[]);
    assert_eq!(report.with_code("wal_uncommitted").count(), 3, "{report}");
    assert!(
        report
            .with_code("wal_uncommitted")
            .all(|f| f.severity == Severity::Info)
    );
    let invalid = codes(&report, "wal_invalid");
    assert_eq!(invalid.len(), 1, "{report}");
    assert_eq!(invalid[0].0, Severity::Critical);
}

#[test]
fn a_gap_names_the_first_missing_segment_and_a_timeline_switch_is_not_one() {
    let (bases, mut files) = three_base_backups();
    files.retain(|(n, _)| n != &seg(1, 0x25) && n != &seg(1, 0x26));
    let wal = specs("production", &files, WalState::Committed);
    let inv = inventory_with_wal("gs://p", &bases, &wal);
    let (_, _, report) = plan_and_audit(&policies(), now(), ("gcs", &inv), None, &[]);
    let gaps = codes(&report, "wal_gap");
    assert_eq!(gaps.len(), 1, "{report}");
    assert_eq!(gaps[0].0, Severity::Critical);
    assert!(
        gaps[0].1.contains(&seg(1, 0x25)) && gaps[0].1.contains("2 segments"),
        "{}",
        gaps[0].1
    );
    assert_eq!(report.with_code("base_backup_without_wal").count(), 0);

    // Promotion to timeline 2 at segment 0x38: timeline 1 up to 0x37
    // (and 0x38 partial), timeline 2 from 0x38 on, with its history file.
    let (bases, mut files) = three_base_backups();
    files.retain(|(n, _)| WalFile::parse(n).unwrap().segment_number(SEG).unwrap() < 0x38);
    let switched: Vec<_> = (0x38..0x40).map(|n| (seg(2, n), now())).collect();
    let mut wal = specs("production", &files, WalState::Committed);
    wal.extend(specs("production", &switched, WalState::Committed));
    let partial = format!("{}.partial", seg(1, 0x38));
    wal.push(("production", &partial, now(), WalState::Committed));
    let with_history = {
        let mut w = wal.clone();
        w.push(("production", "00000002.history", now(), WalState::Committed));
        w
    };
    let inv = inventory_with_wal("gs://p", &bases, &with_history);
    let (_, _, report) = plan_and_audit(&policies(), now(), ("gcs", &inv), None, &[]);
    assert_eq!(report.with_code("wal_gap").count(), 0, "{report}");
    // Without the history file timeline 2 is not followed: timeline 1
    // simply ends at 0x37.
    let inv = inventory_with_wal("gs://p", &bases, &wal);
    let (_, _, report) = plan_and_audit(&policies(), now(), ("gcs", &inv), None, &[]);
    assert_eq!(report.with_code("wal_gap").count(), 0, "{report}");
}

#[test]
fn a_base_backup_whose_own_wal_is_missing_is_critical() {
    let (bases, mut files) = three_base_backups();
    files.retain(|(n, _)| n != &seg(1, 0x31));
    let wal = specs("production", &files, WalState::Committed);
    let inv = inventory_with_wal("gs://p", &bases, &wal);
    let (_, _, report) = plan_and_audit(&policies(), now(), ("gcs", &inv), None, &[]);
    let found = codes(&report, "base_backup_without_wal");
    assert_eq!(found.len(), 1, "{report}");
    assert_eq!(found[0].0, Severity::Critical);
    assert!(found[0].1.contains(&seg(1, 0x31)), "{}", found[0].1);
}

#[test]
fn a_stale_archive_is_critical_outside_branches_and_the_window_is_reported() {
    let (bases, _) = three_base_backups();
    let files = segments(0x20, 0x40, now() - TimeDelta::hours(3));
    let wal = specs("production", &files, WalState::Committed);
    let inv = inventory_with_wal("gs://p", &bases, &wal);
    let (_, _, report) = plan_and_audit(&policies(), now(), ("gcs", &inv), None, &[]);
    let stale = codes(&report, "wal_archive_stale");
    assert_eq!(stale.len(), 1, "{report}");
    assert_eq!(stale[0].0, Severity::Critical);
    assert!(stale[0].1.contains("3h"), "{}", stale[0].1);
    let window = codes(&report, "pitr_window");
    assert_eq!(window[0].0, Severity::Info);
    // From the oldest kept base backup's end (finished 30 s after start).
    assert!(
        window[0]
            .1
            .contains("from 2026-11-30T12:00:30Z to 2026-12-01T09:00:00Z"),
        "{}",
        window[0].1
    );

    // The same in a branch namespace: a warning.
    let t = now();
    let bases = vec![(base_id("br-x", t - TimeDelta::days(1), 0x20), Kind::ok())];
    let files = segments(0x20, 0x30, t - TimeDelta::hours(3));
    let wal = specs("br-x", &files, WalState::Committed);
    let inv = inventory_with_wal("gs://p", &bases, &wal);
    let (_, _, report) = plan_and_audit(&policies(), now(), ("gcs", &inv), None, &[]);
    assert_eq!(
        codes(&report, "wal_archive_stale")[0].0,
        Severity::Warning,
        "{report}"
    );
}

#[test]
fn wal_missing_in_the_replica_is_critical_after_the_replica_grace() {
    let (bases, files) = three_base_backups();
    let wal = specs("production", &files, WalState::Committed);
    let primary = inventory_with_wal("gs://p", &bases, &wal);
    // The replica lacks one old and the newest segment.
    let mut copied = files.clone();
    copied.retain(|(n, _)| n != &seg(1, 0x22) && n != &seg(1, 0x3f));
    let old = &files.iter().find(|(n, _)| n == &seg(1, 0x22)).unwrap().1;
    let replica = inventory_with_wal(
        "s3://r",
        &bases,
        &specs("production", &copied, WalState::Committed),
    );
    let mut p = policies();
    p.replica_grace = now() - *old - TimeDelta::minutes(1);
    let (_, _, report) = plan_and_audit(&p, now(), ("gcs", &primary), Some(("s3", &replica)), &[]);
    let missing: Vec<_> = report.with_code("wal_missing_replica").collect();
    assert_eq!(missing.len(), 1, "{report}");
    assert_eq!(missing[0].severity, Severity::Critical);
    assert!(
        missing[0]
            .subject
            .as_deref()
            .unwrap()
            .ends_with(&seg(1, 0x22))
    );
    assert_eq!(
        report.with_code("wal_replica_pending").count(),
        1,
        "{report}"
    );
}

#[test]
fn the_newest_base_backup_survives_and_only_branches_are_abandoned_with_their_wal() {
    let t = now();
    let old = t - TimeDelta::days(30);
    for (ns, abandoned) in [("billing", false), ("br-feature", true)] {
        let bases = vec![(base_id(ns, old, 0x10), Kind::ok())];
        let files = segments(0x10, 0x14, old);
        let wal = specs(ns, &files, WalState::Committed);
        let inv = inventory_with_wal("gs://p", &bases, &wal);
        let p = plan(&inv, &PolicySet::default(), t);
        assert_eq!(
            p.decision(&bases[0].0).unwrap().decision.is_delete(),
            abandoned,
            "{p}"
        );
        assert_eq!(!p.wal_deletes.is_empty(), abandoned, "{p}");
        assert_eq!(wal_plan(&p, ns).abandoned, abandoned);
    }
    // Recent WAL keeps a branch namespace alive.
    let bases = vec![(base_id("br-feature", old, 0x10), Kind::ok())];
    let files = segments(0x10, 0x14, t);
    let inv = inventory_with_wal(
        "gs://p",
        &bases,
        &specs("br-feature", &files, WalState::Committed),
    );
    let p = plan(&inv, &PolicySet::default(), t);
    assert!(!wal_plan(&p, "br-feature").abandoned, "{p}");
    assert!(p.wal_deletes.is_empty());
}

#[test]
fn base_backups_follow_their_own_keep_counts() {
    let t = now();
    let mut items: Vec<_> = (0..5u32)
        .map(|i| {
            (
                base_id("production", t - TimeDelta::days(i as i64), 0x50 - i * 0x10),
                Kind::ok(),
            )
        })
        .collect();
    items.extend((0..5u32).map(|i| {
        (
            bid("production", "app", t - TimeDelta::days(i as i64), i),
            Kind::ok(),
        )
    }));
    let inv = inventory_with_wal("gs://p", &items, &[]);
    let p = plan(&inv, &policies(), t);
    let kept = |db_is_cluster: bool| {
        items
            .iter()
            .filter(|(id, _)| id.system_identifier().is_some() == db_is_cluster)
            .filter(|(id, _)| !p.decision(id).unwrap().decision.is_delete())
            .count()
    };
    assert_eq!(kept(true), 2, "{p}");
    assert_eq!(kept(false), 5, "{p}");
}

#[tokio::test]
async fn collect_verifies_wal_skips_old_manifests_and_sees_rewritten_data() {
    let (bases, files) = three_base_backups();
    let store = MemStore::new("gs://p");
    populate(&store, &bases);
    populate_wal(&store, &specs("production", &files, WalState::Committed));
    // A segment below every base backup: its manifest is never read.
    store.fail_gets([wal_key("production", &seg(1, 0x08)).manifest_key()]);
    // A committed data object rewritten after the push.
    let k = wal_key("production", &seg(1, 0x30));
    store.insert(
        &format!("{}{}", k.dir(), k.data_name("0000000a")),
        vec![9u8; 64],
    );
    let inv = collect(&store, &MarkerVerifier, DEFAULT_VERIFY_CONCURRENCY)
        .await
        .expect("the old manifest is not read");
    let one = collect(&store, &MarkerVerifier, 1).await.unwrap();
    assert_eq!(inv, one);
    let files_of = |name: &str| {
        inv.wal
            .values()
            .next()
            .unwrap()
            .files
            .values()
            .find(|e| e.key.file.name() == name)
            .unwrap()
            .verification
            .clone()
    };
    assert_eq!(files_of(&seg(1, 0x08)), WalVerification::NotChecked);
    assert!(matches!(
        files_of(&seg(1, 0x10)),
        WalVerification::Verified { .. }
    ));
    assert!(matches!(
        files_of(&seg(1, 0x30)),
        WalVerification::Invalid { .. }
    ));
    let (_, _, report) = plan_and_audit(&policies(), now(), ("gcs", &inv), None, &[]);
    assert_eq!(
        report.with_code("wal_digest_mismatch").count(),
        1,
        "{report}"
    );
    // The rewritten segment does not count as archived.
    assert_eq!(
        report.with_code("base_backup_without_wal").count(),
        1,
        "{report}"
    );

    // Deletes: the manifest first; a dry run deletes nothing.
    let p = plan(&inv, &policies(), now());
    let dry = apply(&store, &p, true).await;
    assert!(
        dry.would_delete
            .contains(&wal_key("production", &seg(1, 0x08)).manifest_key())
    );
    assert!(store.contains(&wal_key("production", &seg(1, 0x08)).manifest_key()));
    let done = apply(&store, &p, false).await;
    assert!(done.failures.is_empty(), "{done}");
    let log = store.delete_log();
    let pos = |key: &str| log.iter().position(|(k, _)| k == key).unwrap();
    let k8 = wal_key("production", &seg(1, 0x08));
    assert!(pos(&k8.manifest_key()) < pos(&format!("{}{}", k8.dir(), k8.data_name("0000000a"))));
    assert!(store.contains(&wal_key("production", &seg(1, 0x20)).manifest_key()));
}

#[tokio::test]
async fn wal_is_not_deleted_when_a_base_backup_delete_failed() {
    let (bases, files) = three_base_backups();
    let store = MemStore::new("gs://p");
    populate(&store, &bases);
    populate_wal(&store, &specs("production", &files, WalState::Committed));
    store.fail_deletes([bases[0].0.manifest_key()]);
    let inv = collect(&store, &MarkerVerifier, 4).await.unwrap();
    let p = plan(&inv, &policies(), now());
    assert!(!p.wal_deletes.is_empty());
    let done = apply(&store, &p, false).await;
    assert_eq!(done.failures.len(), 1, "{done}");
    assert!(store.contains(&wal_key("production", &seg(1, 0x10)).manifest_key()));
}

#[tokio::test]
async fn the_signature_verifier_opens_sealed_wal_manifests() {
    use crate::crypto::SigningKey;
    use crate::crypto::keys::tests::test_keys;
    use crate::retention::SignatureVerifier;
    use crate::retention::inventory::ManifestVerifier;
    let k = test_keys();
    let signer = SigningKey::from_armored(&k.signing.secret_armored).unwrap();
    let store = MemStore::new("gs://p");
    let key = wal_key("production", &seg(1, 3));
    let data = vec![5u8; 64];
    let mut m = super::testutil::wal_manifest(&key, &data, now());
    m.signer = k.signing.fingerprint.clone();
    store.insert(&format!("{}{}", key.dir(), key.data_name("0000000a")), data);
    store.insert(&key.manifest_key(), m.seal(&signer).unwrap());
    let inv = Inventory::from_listing(
        "gs://p",
        crate::store::ObjectStoreExt::list_all(&store, "")
            .await
            .unwrap(),
    );
    let entry = inv
        .wal
        .values()
        .next()
        .unwrap()
        .files
        .values()
        .next()
        .unwrap();
    let verifier = SignatureVerifier {
        keys: crate::trust::TrustedKeys {
            signing: vec![signer.verifying_key()],
            recipients: crate::crypto::RecipientSet::new(&[]),
        },
    };
    let v = verifier.verify_wal(&store, entry).await.unwrap();
    assert!(matches!(v, WalVerification::Verified { .. }), "{v:?}");
    let other = SigningKey::from_armored(&k.signing2.secret_armored).unwrap();
    let wrong = SignatureVerifier {
        keys: crate::trust::TrustedKeys {
            signing: vec![other.verifying_key()],
            recipients: crate::crypto::RecipientSet::new(&[]),
        },
    };
    let v = wrong.verify_wal(&store, entry).await.unwrap();
    assert!(matches!(v, WalVerification::Invalid { .. }), "{v:?}");
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::retention::wal_inventory::BaseNeed;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Over random base backups (some invalid) and WAL on three
        /// timelines: nothing at or above a kept base backup's start is
        /// deleted, `.history` never is, and without a kept base backup
        /// nothing is.
        #[test]
        fn never_deletes_wal_a_kept_base_backup_needs(
            bases in prop::collection::vec((0u32..64, 0i64..720, any::<bool>()), 0..6),
            files in prop::collection::vec((1u32..4, 0u64..80), 0..60),
            keep in 1u32..4,
        ) {
            let items: Vec<_> = bases
                .iter()
                .map(|(start, hours, ok)| {
                    let kind = if *ok { Kind::ok() } else { Kind::Invalid(InvalidKind::BadSignature) };
                    (base_id("production", now() - TimeDelta::hours(*hours), *start), kind)
                })
                .collect();
            let mut names: Vec<String> = files.iter().map(|(t, n)| seg(*t, *n)).collect();
            names.extend(["00000002.history".to_string(), "00000003.history".to_string()]);
            let wal: Vec<WalSpec> = names
                .iter()
                .map(|n| ("production", n.as_str(), now() - TimeDelta::days(40), WalState::Committed))
                .collect();
            let inv = inventory_with_wal("gs://p", &items, &wal);
            let mut set = policies();
            set.rules[0].base_backups = Some(crate::retention::RetentionPolicy { keep_last: keep, ..Default::default() });
            let p = plan(&inv, &set, now());
            let kept: Vec<BaseNeed> = items
                .iter()
                .filter(|(id, _)| matches!(p.decision(id).map(|b| &b.decision), Some(Decision::Keep { .. })))
                .filter_map(|(id, _)| BaseNeed::of(id, inv.get(id)?.manifest()?))
                .collect();
            let lowest = kept.iter().map(|n| n.start).min();
            for op in &p.wal_deletes {
                let name = op.file.rsplit('/').next().unwrap();
                let file = WalFile::parse(name).unwrap();
                prop_assert!(file.kind() != crate::wal::WalFileKind::TimelineHistory, "{name}");
                let low = lowest.expect("WAL deleted without a kept base backup");
                prop_assert!(file.segment_number(SEG).unwrap() < low, "{name} needed from {low:#x}");
            }
        }
    }
}
