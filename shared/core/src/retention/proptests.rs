//! Property tests: over random histories, clocks, policies and injected
//! failures, the safety rules never break.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Timelike, Utc};
use proptest::prelude::*;

use super::execute::{DEFAULT_VERIFY_CONCURRENCY, apply, collect, prune};
use super::inventory::{BackupEntry, InvalidKind, Inventory, SeriesKey};
use super::plan::{Decision, DeleteReason, HoldReason, Plan, plan};
use super::policy::{NamespacePattern, NamespaceRule, PolicySet, RetentionPolicy};
use super::testutil::{Kind, MarkerVerifier, MemStore, bid, inventory, populate};
use crate::naming::BackupId;

const NAMESPACES: [&str; 4] = ["production", "feat-a", "feat-b", "staging"];
const DATABASES: [&str; 2] = ["app", "auth"];
const DAY: i64 = 86_400;

fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        8 => (prop::sample::select(vec![1000u64, 1000, 1000, 900, 400]), prop::sample::select(vec![100u64, 100, 90, 30]))
            .prop_map(|(plaintext, rows)| Kind::Verified { plaintext, rows }),
        1 => prop::sample::select(vec![InvalidKind::Unsigned, InvalidKind::BadSignature, InvalidKind::Plaintext])
            .prop_map(Kind::Invalid),
        1 => Just(Kind::NotChecked),
        2 => (any::<bool>(), any::<bool>(), any::<bool>())
            .prop_filter("incomplete", |(d, s, m)| !(*d && *s && *m))
            .prop_map(|(data, sig, manifest)| Kind::Incomplete { data, sig, manifest }),
    ]
}

/// Times over ~14 months, with bursts: many backups share days and hours.
fn arb_history(max: usize) -> impl Strategy<Value = Vec<(BackupId, Kind)>> {
    prop::collection::vec(
        (
            0..NAMESPACES.len(),
            0..DATABASES.len(),
            0i64..420,
            0i64..DAY,
            any::<u32>(),
            arb_kind(),
        ),
        0..max,
    )
    .prop_map(|raw| {
        let mut seen = BTreeSet::new();
        raw.into_iter()
            .map(|(n, d, day, sec, nonce, kind)| {
                let t = epoch() + TimeDelta::seconds(day * DAY + sec);
                (bid(NAMESPACES[n], DATABASES[d], t, nonce), kind)
            })
            .filter(|(id, _)| seen.insert(id.clone()))
            .collect()
    })
}

fn arb_policy() -> impl Strategy<Value = RetentionPolicy> {
    (
        (0u32..4, 0u32..4, 0u32..6, 0u32..4, 0u32..4, 0u32..3),
        prop::option::weighted(0.3, 1i64..60),
    )
        .prop_map(|((last, hourly, daily, weekly, monthly, yearly), within)| {
            let mut p = RetentionPolicy {
                keep_last: last,
                keep_hourly: hourly,
                keep_daily: daily,
                keep_weekly: weekly,
                keep_monthly: monthly,
                keep_yearly: yearly,
                keep_within: within.map(TimeDelta::days),
            };
            if p.is_empty() {
                p.keep_last = 1;
            }
            p
        })
}

fn rule(pattern: &str, policy: RetentionPolicy) -> NamespaceRule {
    NamespaceRule {
        pattern: NamespacePattern::new(pattern).unwrap(),
        policy,
        protected: false,
        replicated: false,
        abandon_after: None,
        stale_after: None,
        drill_max_age: None,
        base_backups: None,
    }
}

/// production, feat-* and (sometimes) a catch-all, so some namespaces may
/// have no rule at all.
fn arb_policies() -> impl Strategy<Value = PolicySet> {
    (
        arb_policy(),
        arb_policy(),
        arb_policy(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(1i64..60),
        prop::option::of(1i64..60),
        1i64..48,
        prop::sample::select(vec![0.0, 0.5]),
    )
        .prop_map(
            |(
                prod,
                feat,
                other,
                protected,
                catch_all,
                feat_abandon,
                other_abandon,
                grace_h,
                ratio,
            )| {
                let mut rules = vec![
                    NamespaceRule {
                        protected,
                        ..rule("production", prod)
                    },
                    NamespaceRule {
                        abandon_after: feat_abandon.map(TimeDelta::days),
                        ..rule("feat-*", feat)
                    },
                ];
                if catch_all {
                    rules.push(NamespaceRule {
                        abandon_after: other_abandon.map(TimeDelta::days),
                        ..rule("*", other)
                    });
                }
                let set = PolicySet {
                    rules,
                    incomplete_grace: TimeDelta::hours(grace_h),
                    replica_grace: TimeDelta::hours(6),
                    shrink_alert_ratio: ratio,
                    max_clock_skew: TimeDelta::minutes(10),
                    branch_namespaces: vec![NamespacePattern::new("feat-*").unwrap()],
                    ..PolicySet::default()
                };
                set.validate().expect("generated policies are valid");
                set
            },
        )
}

/// A clock from before the first backup to well after the last.
fn arb_now() -> impl Strategy<Value = DateTime<Utc>> {
    (-10i64..500, 0i64..DAY).prop_map(|(d, s)| epoch() + TimeDelta::seconds(d * DAY + s))
}

/// restic's bucket rules restated with sets, and with weeks computed from
/// Monday dates rather than ISO week numbers, as an independent reference.
fn reference_keep(policy: &RetentionPolicy, times: &[DateTime<Utc>]) -> BTreeSet<usize> {
    let mut keep: BTreeSet<usize> = (0..times.len().min(policy.keep_last as usize)).collect();
    type PeriodFn = fn(DateTime<Utc>) -> (i32, u32, u32, u32);
    let periods: [(u32, PeriodFn); 5] = [
        (policy.keep_hourly, |t| {
            (t.year(), t.month(), t.day(), t.hour())
        }),
        (policy.keep_daily, |t| (t.year(), t.month(), t.day(), 0)),
        (policy.keep_weekly, |t| {
            let monday: NaiveDate =
                t.date_naive() - TimeDelta::days(t.weekday().num_days_from_monday() as i64);
            (monday.year(), monday.month(), monday.day(), 0)
        }),
        (policy.keep_monthly, |t| (t.year(), t.month(), 0, 0)),
        (policy.keep_yearly, |t| (t.year(), 0, 0, 0)),
    ];
    for (count, period) in periods {
        // Newest backup of each period, then the newest `count` periods.
        let mut newest: BTreeMap<(i32, u32, u32, u32), usize> = BTreeMap::new();
        for (i, t) in times.iter().enumerate() {
            newest.entry(period(*t)).or_insert(i);
        }
        let mut picks: Vec<usize> = newest.into_values().collect();
        picks.sort();
        keep.extend(picks.into_iter().take(count as usize));
    }
    if let (Some(d), Some(first)) = (policy.keep_within, times.first()) {
        keep.extend((0..times.len()).filter(|&i| times[i] > *first - d));
    }
    keep
}

fn newest_live_in_namespace(
    inv: &Inventory,
    ns: &str,
    grace_cutoff: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    inv.backups
        .values()
        .filter(|e| {
            e.id.namespace.as_str() == ns && (e.is_complete() || e.id.taken_at >= grace_cutoff)
        })
        .map(|e| e.id.taken_at)
        .max()
}

/// Every safety rule of the planner, checked against the inventory.
fn check_plan(
    inv: &Inventory,
    policies: &PolicySet,
    now: DateTime<Utc>,
    p: &Plan,
) -> Result<(), TestCaseError> {
    let series = inv.series();
    prop_assert_eq!(p.series.len(), series.len());
    let mut planned_deletes = BTreeSet::new();
    for s in &p.series {
        let entries = &series[&s.series];
        prop_assert_eq!(s.backups.len(), entries.len());
        let ns = s.series.namespace.as_str();
        let rule = policies.rule_for(ns);
        let abandoned = rule.is_some_and(|r| {
            !r.protected
                && policies.is_branch(ns)
                && r.abandon_after.is_some_and(|a| {
                    newest_live_in_namespace(inv, ns, now - policies.incomplete_grace)
                        .is_some_and(|t| now - t > a)
                })
        });
        prop_assert_eq!(s.abandoned, abandoned, "abandonment of {}", ns);
        if rule.is_some_and(|r| r.protected) || ns == "production" || !policies.is_branch(ns) {
            prop_assert!(
                !s.abandoned,
                "protected or non-branch namespace {} abandoned",
                ns
            );
        }
        // Future-dated backups (beyond the skew) never count (rule 7).
        let future = |e: &BackupEntry| {
            e.manifest()
                .is_some_and(|m| e.id.taken_at.max(m.started_at) > now + policies.max_clock_skew)
        };
        let newest_verified = entries
            .iter()
            .find(|e| e.is_verified() && !future(e))
            .map(|e| &e.id);
        for (b, e) in s.backups.iter().zip(entries) {
            prop_assert_eq!(&b.id, &e.id);
            let deleted = b.decision.is_delete();
            if deleted {
                planned_deletes.insert(b.id.clone());
            }
            if rule.is_none() {
                prop_assert!(!deleted, "{} deleted without a rule", b.id);
            }
            if Some(&b.id) == newest_verified && !abandoned {
                prop_assert!(
                    matches!(b.decision, Decision::Keep { .. })
                        || (rule.is_none()
                            && b.decision
                                == Decision::Hold {
                                    reason: HoldReason::NoRule
                                }),
                    "newest verified {} not kept: {:?}",
                    b.id,
                    b.decision
                );
            }
            if e.is_verified() && future(e) && rule.is_some() {
                prop_assert_eq!(
                    &b.decision,
                    &Decision::Hold {
                        reason: HoldReason::Future
                    },
                    "future-dated {} not held",
                    &b.id
                );
            }
            if e.is_complete() && !e.is_verified() {
                prop_assert!(!deleted, "unverified complete backup {} deleted", b.id);
                prop_assert!(
                    matches!(b.decision, Decision::Hold { .. }),
                    "{} not held",
                    b.id
                );
            }
            if !e.is_complete()
                && e.id.taken_at >= now - policies.incomplete_grace
                && rule.is_some()
            {
                prop_assert_eq!(
                    &b.decision,
                    &Decision::Hold {
                        reason: HoldReason::InProgress
                    }
                );
            }
            if let Decision::Delete { reason } = b.decision {
                prop_assert_eq!(reason == DeleteReason::Abandoned, abandoned);
                prop_assert_eq!(
                    reason == DeleteReason::Orphan,
                    !e.is_complete() && !abandoned
                );
            }
        }
        // Kept counted backups are exactly restic's choice (plus the newest
        // verified), unless abandoned.
        if let (Some(rule), false) = (rule, abandoned) {
            let counted: Vec<usize> = (0..s.backups.len())
                .filter(|&i| s.backups[i].status.is_verified())
                .collect();
            let times: Vec<_> = counted.iter().map(|&i| s.backups[i].id.taken_at).collect();
            let expect: BTreeSet<usize> = reference_keep(&rule.policy, &times)
                .into_iter()
                .map(|j| counted[j])
                .collect();
            for &i in &counted {
                let kept = matches!(s.backups[i].decision, Decision::Keep { .. });
                let is_newest = Some(&s.backups[i].id) == newest_verified;
                prop_assert_eq!(
                    kept,
                    expect.contains(&i) || is_newest,
                    "{} in {:?}",
                    s.backups[i].id,
                    rule.policy
                );
            }
        }
    }
    // The delete operations match the decisions, each in safe order.
    let ops: BTreeSet<BackupId> = p.deletes.iter().map(|op| op.backup.clone()).collect();
    prop_assert_eq!(&ops, &planned_deletes);
    prop_assert!(p.deletes.windows(2).all(|w| w[0].backup < w[1].backup));
    for op in &p.deletes {
        let entry = inv.get(&op.backup).unwrap();
        prop_assert_eq!(&op.keys, &entry.objects.deletion_order());
        let pos = |k: String| op.keys.iter().position(|x| *x == k);
        let (m, s, d) = (
            pos(op.backup.manifest_key()),
            pos(op.backup.signature_key()),
            pos(op.backup.data_key()),
        );
        if let (Some(m), Some(d)) = (m, d) {
            prop_assert!(m < d);
        }
        if let (Some(m), Some(s)) = (m, s) {
            prop_assert!(m < s);
        }
        if let (Some(s), Some(d)) = (s, d) {
            prop_assert!(s < d);
        }
    }
    Ok(())
}

fn deleted_verified(p: &Plan, inv: &Inventory) -> BTreeSet<BackupId> {
    p.deletes
        .iter()
        .map(|op| op.backup.clone())
        .filter(|id| inv.get(id).is_some_and(|e| e.is_verified()))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn plan_keeps_every_safety_rule(
        history in arb_history(80),
        policies in arb_policies(),
        now in arb_now(),
        foreign in prop::collection::vec("[a-z]{1,8}(/[a-z0-9._-]{1,8}){0,4}", 0..4),
    ) {
        let foreign: Vec<&str> = foreign.iter().map(String::as_str).collect();
        let inv = inventory("gs://b", &history, &foreign);
        let p = plan(&inv, &policies, now);
        check_plan(&inv, &policies, now, &p)?;
        prop_assert_eq!(&p, &plan(&inv, &policies, now), "planning is deterministic");
    }

    /// Adding junk (invalid, unverified, incomplete backups) never makes a
    /// verified backup go: junk only ever makes the plan keep more.
    #[test]
    fn junk_never_pushes_out_verified_backups(
        history in arb_history(80),
        policies in arb_policies(),
        now in arb_now(),
    ) {
        let inv = inventory("gs://b", &history, &[]);
        let clean: Vec<_> = history.iter().filter(|(_, k)| matches!(k, Kind::Verified { .. })).cloned().collect();
        let clean_inv = inventory("gs://b", &clean, &[]);
        let with_junk = deleted_verified(&plan(&inv, &policies, now), &inv);
        let without = deleted_verified(&plan(&clean_inv, &policies, now), &clean_inv);
        prop_assert!(with_junk.is_subset(&without), "junk made {:?} go", with_junk.difference(&without).collect::<Vec<_>>());
        if policies.rules.iter().all(|r| r.abandon_after.is_none()) {
            prop_assert_eq!(with_junk, without);
        }
    }

    /// The whole run against a store, with injected listing, verification
    /// and delete failures, page sizes and dry runs.
    #[test]
    fn pruning_a_store_is_safe_and_idempotent(
        history in arb_history(50),
        policies in arb_policies(),
        now in arb_now(),
        page_size in 1usize..40,
        fail_page in prop::option::weighted(0.25, 0usize..6),
        fail_get in prop::option::weighted(0.1, any::<prop::sample::Index>()),
        fail_deletes in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        dry_run in prop::bool::weighted(0.25),
    ) {
        let store = MemStore::new("gs://b");
        populate(&store, &history);
        store.set_page_size(page_size);
        let before = store.snapshot();
        let keys: Vec<String> = before.keys().cloned().collect();
        let pages = before.len().div_ceil(page_size).max(1);
        let list_fails = fail_page.is_some_and(|p| p < pages);
        store.fail_list_page(fail_page);
        let complete_sig_keys: Vec<String> = history
            .iter()
            .filter(|(_, k)| !matches!(k, Kind::Incomplete { .. }))
            .map(|(id, _)| id.signature_key())
            .collect();
        let get_fails = match fail_get {
            Some(ix) if !complete_sig_keys.is_empty() => {
                store.fail_gets([ix.get(&complete_sig_keys).clone()]);
                true
            }
            _ => false,
        };
        if !keys.is_empty() {
            store.fail_deletes(fail_deletes.iter().map(|ix| ix.get(&keys).clone()));
        }
        let rt = runtime();
        let result = rt.block_on(prune(&store, &MarkerVerifier, &policies, now, dry_run, DEFAULT_VERIFY_CONCURRENCY));
        if list_fails || get_fails {
            prop_assert!(result.is_err(), "a failed listing or verification must abort");
            prop_assert_eq!(store.snapshot(), before);
            prop_assert!(store.delete_log().is_empty());
            return Ok(());
        }
        let pruned = result.unwrap();
        check_plan(&pruned.inventory, &policies, now, &pruned.plan)?;
        if dry_run {
            prop_assert_eq!(store.snapshot(), before);
            prop_assert!(store.delete_log().is_empty());
            let planned: Vec<String> = pruned.plan.deletes.iter().flat_map(|o| o.keys.clone()).collect();
            prop_assert_eq!(&pruned.applied.would_delete, &planned);
            return Ok(());
        }
        // Per backup, delete attempts follow the plan's order and stop at the
        // first failure; nothing outside the plan is touched.
        let log = store.delete_log();
        let planned: BTreeMap<String, BackupId> = pruned
            .plan
            .deletes
            .iter()
            .flat_map(|op| op.keys.iter().map(move |k| (k.clone(), op.backup.clone())))
            .collect();
        for op in &pruned.plan.deletes {
            let attempts: Vec<&(String, bool)> = log.iter().filter(|(k, _)| planned.get(k) == Some(&op.backup)).collect();
            let expect_len = attempts.iter().position(|(_, ok)| !ok).map_or(op.keys.len(), |i| i + 1);
            prop_assert_eq!(attempts.len(), expect_len);
            for (a, k) in attempts.iter().zip(&op.keys) {
                prop_assert_eq!(&a.0, k);
            }
        }
        prop_assert!(log.iter().all(|(k, _)| planned.contains_key(k)));
        let after = store.snapshot();
        for key in before.keys() {
            if !planned.contains_key(key) {
                prop_assert!(after.contains_key(key), "{} not planned but gone", key);
            }
        }
        // A half-deleted backup never looks complete: wherever the data or
        // signature is gone, the manifest is gone too.
        for op in &pruned.plan.deletes {
            let has = |k: String| after.contains_key(&k);
            if has(op.backup.manifest_key()) {
                prop_assert!(op.keys.iter().all(|k| after.contains_key(k)), "{} half deleted but has a manifest", op.backup);
            }
        }
        let failed_keys: usize = pruned.applied.failures.iter().map(|f| 1 + f.not_attempted.len()).sum();
        prop_assert_eq!(
            pruned.applied.deleted.len() + pruned.applied.already_gone.len() + failed_keys,
            planned.len()
        );
        // Applying again, failures healed, finishes the job; a third time
        // changes nothing and fails nothing.
        store.fail_deletes([]);
        let second = rt.block_on(apply(&store, &pruned.plan, false));
        prop_assert!(second.failures.is_empty());
        let done = store.snapshot();
        for key in before.keys() {
            prop_assert_eq!(done.contains_key(key), !planned.contains_key(key));
        }
        let third = rt.block_on(apply(&store, &pruned.plan, false));
        prop_assert!(third.deleted.is_empty() && third.failures.is_empty());
        prop_assert_eq!(third.already_gone.len(), planned.len());
        prop_assert_eq!(store.snapshot(), done);
        // The pruned state is a fixed point: planning again deletes nothing.
        {
            store.fail_list_page(None);
            store.fail_gets([]);
            let inv = rt.block_on(collect(&store, &MarkerVerifier, DEFAULT_VERIFY_CONCURRENCY)).unwrap();
            let again = plan(&inv, &policies, now);
            prop_assert!(again.deletes.is_empty(), "replanning deletes {:?}", again.deletes);
        }
    }
}

#[test]
fn plan_is_refused_by_another_store() {
    let t = epoch();
    let history = vec![
        (bid("feat-a", "app", t, 1), Kind::ok()),
        (bid("feat-a", "app", t + TimeDelta::days(1), 2), Kind::ok()),
        (bid("feat-a", "app", t + TimeDelta::days(2), 3), Kind::ok()),
    ];
    let policies = PolicySet::default();
    let a = MemStore::new("gs://a");
    let b = MemStore::new("s3://b");
    populate(&a, &history);
    populate(&b, &history);
    let rt = runtime();
    let inv = rt
        .block_on(collect(&a, &MarkerVerifier, DEFAULT_VERIFY_CONCURRENCY))
        .unwrap();
    let p = plan(&inv, &policies, t + TimeDelta::days(3));
    assert_eq!(p.deletes.len(), 1);
    let report = rt.block_on(apply(&b, &p, false));
    assert!(report.refused.is_some(), "{report}");
    assert!(b.delete_log().is_empty());
    let report = rt.block_on(apply(&a, &p, false));
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.deleted.len(), 3);
    assert!(a.list_calls() >= 1);
}

#[test]
fn series_are_planned_independently() {
    // Two databases in one namespace: one's backups never push out the other's.
    let t = epoch();
    let history: Vec<_> = (0..5)
        .flat_map(|i| {
            [
                (
                    bid("feat-a", "app", t + TimeDelta::hours(i), i as u32),
                    Kind::ok(),
                ),
                (
                    bid(
                        "feat-a",
                        "auth",
                        t + TimeDelta::hours(i) + TimeDelta::minutes(1),
                        100 + i as u32,
                    ),
                    Kind::ok(),
                ),
            ]
        })
        .collect();
    let inv = inventory("gs://b", &history, &[]);
    let p = plan(&inv, &PolicySet::default(), t + TimeDelta::days(1));
    let kept: BTreeMap<SeriesKey, usize> = p
        .series
        .iter()
        .map(|s| {
            (
                s.series.clone(),
                s.backups.iter().filter(|b| !b.decision.is_delete()).count(),
            )
        })
        .collect();
    assert_eq!(kept.values().copied().collect::<Vec<_>>(), vec![2, 2]);
}

/// Handlers run these inside `#[async_trait]` functions, whose futures must
/// be `Send`.
#[allow(dead_code)]
fn store_futures_are_send(store: &MemStore, plan: &Plan, policies: &PolicySet) {
    fn send<T: Send>(_: T) {}
    send(apply(store, plan, false));
    send(collect(store, &MarkerVerifier, DEFAULT_VERIFY_CONCURRENCY));
    send(prune(
        store,
        &MarkerVerifier,
        policies,
        epoch(),
        true,
        DEFAULT_VERIFY_CONCURRENCY,
    ));
    send(super::drills::load_drills(store, &Inventory::default(), 3));
}

#[async_trait::async_trait]
trait Handler {
    async fn run(&self, store: &MemStore, plan: &Plan) -> usize;
}

struct ApplyHandler;

#[async_trait::async_trait]
impl Handler for ApplyHandler {
    async fn run(&self, store: &MemStore, plan: &Plan) -> usize {
        let inv = collect(store, &MarkerVerifier, DEFAULT_VERIFY_CONCURRENCY)
            .await
            .unwrap();
        apply(store, plan, true).await.would_delete.len() + inv.object_count
    }
}

#[test]
fn store_futures_work_inside_async_trait() {
    let store = MemStore::new("gs://b");
    let history = vec![(bid("feat-a", "app", epoch(), 1), Kind::ok())];
    populate(&store, &history);
    let inv = inventory("gs://b", &history, &[]);
    let p = plan(&inv, &PolicySet::default(), epoch());
    assert_eq!(runtime().block_on(ApplyHandler.run(&store, &p)), 3);
}
