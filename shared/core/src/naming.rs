//! Object names: where a backup's pieces live, and how names sort by time.
//!
//! ```text
//! <namespace>/<database>/<stamp>/data.pgdump.pgp     the encrypted dump
//! <namespace>/<database>/<stamp>/manifest.json.sig   detached signature
//! <namespace>/<database>/<stamp>/manifest.json       commit marker, written last
//! _drills/<namespace>/<database>/<stamp>/<run>.json  restore drill records, one per run
//! <namespace>/.cluster-<system id>/<stamp>/...       a physical base backup (same three files)
//! <namespace>/.wal/<system id>/<timeline>/...        archived WAL (`crate::wal`)
//! ```
//! `stamp` is `yyyymmddThhmmssZ-xxxxxx` (UTC, then 6 random hex digits), so
//! names sort by time and two dumps in the same second never collide.
//!
//! `database` is the key segment of the database's real name
//! ([`database_segment`]): any name PostgreSQL accepts, percent-encoded
//! where it could not stand in an object key as it is (`Ünï app` →
//! `%C3%9Cn%C3%AF%20app`). Names of the old rule encode to themselves.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};

/// File name of a backup's encrypted dump.
pub const DATA_FILE: &str = "data.pgdump.pgp";
/// File name of a backup's manifest, its commit marker (written last).
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the manifest's detached signature.
pub const SIGNATURE_FILE: &str = "manifest.json.sig";
/// Key prefix of the restore drill records.
pub const DRILLS_PREFIX: &str = "_drills/";

const STAMP_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// A name that breaks the naming rules. Permanent: fix the name or the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A namespace breaks the rules of [`Namespace::new`].
    #[error(
        "namespace {0:?} is invalid: use 1-63 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
    )]
    Namespace(String),
    /// A database name PostgreSQL would not keep as it is: empty, longer
    /// than [`MAX_NAME_BYTES`] bytes, or with a NUL character.
    #[error(
        "database name {0:?} is invalid: PostgreSQL database names are 1-63 bytes of UTF-8 without NUL characters; connect to the database by a name of that kind"
    )]
    Database(String),
    /// An object key segment that is not the one encoding of a database
    /// name ([`database_segment`]): written by something other than Backstop.
    #[error(
        "{0:?} is not an encoded database name: expected a-z, A-Z, 0-9, '_', '-', '.' (not first) and %XX escapes with upper-case hex for every other byte, as `backstop dump` writes them (see the README's object layout)"
    )]
    DatabaseSegment(String),
    /// An object key or backup id does not have the shape of a backup's.
    #[error(
        "{0:?} is not a backup object name (expected <namespace>/<database>/<yyyymmddThhmmssZ-xxxxxx>/<file>)"
    )]
    NotABackup(String),
    /// Not a WAL file name or LSN (`crate::wal`); says what was expected.
    #[error("{0}")]
    NotAWalFile(String),
}

/// The key segment of a cluster's physical base backups,
/// `.cluster-<system identifier>`: a database's segment never starts with
/// `.` ([`database_segment`] escapes it), so no database shares it.
pub const CLUSTER_SEGMENT_PREFIX: &str = ".cluster-";
/// The `database` of a base backup's id (see [`cluster_database`]).
const CLUSTER_NAME_PREFIX: &str = "\0cluster-";

/// The `database` a base backup of the cluster `system_identifier` is
/// filed under: a name PostgreSQL cannot have (it starts with NUL), so a
/// cluster's series never mixes with a database's, and no logical restore
/// ever picks it.
pub fn cluster_database(system_identifier: u64) -> String {
    format!("{CLUSTER_NAME_PREFIX}{system_identifier}")
}

/// The system identifier of a cluster series' `database`
/// ([`cluster_database`]); `None` for a real database name.
pub fn cluster_of(database: &str) -> Option<u64> {
    canonical_u64(database.strip_prefix(CLUSTER_NAME_PREFIX)?)
}

/// A decimal `u64` written the one way `to_string` writes it.
fn canonical_u64(digits: &str) -> Option<u64> {
    let n: u64 = digits.parse().ok()?;
    (n.to_string() == digits).then_some(n)
}

/// The longest name PostgreSQL keeps (NAMEDATALEN - 1 bytes; it truncates
/// longer identifiers): the limit of namespaces, database names and
/// patterns alike.
pub const MAX_NAME_BYTES: usize = 63;

fn valid_segment(s: &str, lower_only: bool) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| {
            (c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
                || (!lower_only && c.is_ascii_uppercase())
        })
}

/// Checks a real database name: what PostgreSQL keeps as it is. Any other
/// character is fine, since keys carry it encoded ([`database_segment`]) and
/// SQL always quotes it.
fn check_database_name(name: &str) -> Result<(), NameError> {
    if cluster_of(name).is_some() {
        return Ok(());
    }
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains('\0') {
        return Err(NameError::Database(name.to_string()));
    }
    Ok(())
}

/// Whether byte `b` at `index` of a name stands in its key segment as it
/// is. A leading `.` is escaped, so no segment is `.`, `..` or hidden.
fn kept_in_segment(index: usize, b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && index > 0)
}

/// The object key segment of a database name: bytes from a-z, A-Z, 0-9,
/// `_`, `-` and `.` (except first) stay, every other byte becomes `%XX`
/// (upper-case hex), so `Ünï app` → `%C3%9Cn%C3%AF%20app`, `a/b` → `a%2Fb`,
/// `a%2Fb` → `a%252Fb`. Reversible ([`parse_database_segment`]), and
/// names of the old rule (`app`, `My_DB-2.0`) encode to themselves, so keys
/// written before encoding are still theirs.
pub fn database_segment(name: &str) -> String {
    use std::fmt::Write;
    if let Some(system_identifier) = cluster_of(name) {
        return format!("{CLUSTER_SEGMENT_PREFIX}{system_identifier}");
    }
    let mut out = String::with_capacity(name.len());
    for (i, &b) in name.as_bytes().iter().enumerate() {
        if kept_in_segment(i, b) {
            out.push(b as char);
        } else {
            write!(out, "%{b:02X}").expect("writing to a String");
        }
    }
    out
}

/// The database name of a key segment: the inverse of
/// [`database_segment`], and strict, so that one database has exactly one
/// key: lower-case hex, an escaped byte that would stand as it is, a bare
/// leading `.`, a truncated escape, invalid UTF-8 and names PostgreSQL
/// would not keep are refused.
pub fn parse_database_segment(seg: &str) -> Result<String, NameError> {
    let bad = || NameError::DatabaseSegment(seg.to_string());
    if let Some(digits) = seg.strip_prefix(CLUSTER_SEGMENT_PREFIX) {
        return canonical_u64(digits).map(cluster_database).ok_or_else(bad);
    }
    let upper_hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let (bytes, mut out) = (seg.as_bytes(), Vec::with_capacity(seg.len()));
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes
                .get(i + 1)
                .copied()
                .and_then(upper_hex)
                .ok_or_else(bad)?;
            let lo = bytes
                .get(i + 2)
                .copied()
                .and_then(upper_hex)
                .ok_or_else(bad)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).map_err(|_| bad())?;
    check_database_name(&name).map_err(|_| bad())?;
    // Canonical or nothing: refuses `%61` for `a`, a bare leading `.` and
    // bytes no encoder writes, in one comparison.
    if database_segment(&name) != seg {
        return Err(bad());
    }
    Ok(name)
}

/// A validated namespace: `production`, or a branch slug.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

impl Namespace {
    /// Validates `s`: 1 to [`MAX_NAME_BYTES`] characters from a-z, 0-9, `.`,
    /// `_` and `-`, starting with a letter or digit.
    pub fn new(s: &str) -> Result<Self, NameError> {
        if valid_segment(s, true) {
            Ok(Self(s.to_string()))
        } else {
            Err(NameError::Namespace(s.to_string()))
        }
    }

    /// The namespace as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Namespace {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Namespace::new(&s)
    }
}

impl From<Namespace> for String {
    fn from(n: Namespace) -> String {
        n.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies one backup: namespace, database and a time-ordered stamp.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackupId {
    /// The namespace the backup belongs to.
    pub namespace: Namespace,
    /// The real name of the database that was dumped (1-63 bytes, no NUL;
    /// any other character): keys and the textual id carry it encoded
    /// ([`database_segment`]).
    pub database: String,
    /// When the dump started, in whole seconds (UTC).
    pub taken_at: DateTime<Utc>,
    /// Hex suffix of the stamp (6 random digits for new ids): keeps dumps in
    /// the same second apart.
    pub nonce: String,
}

impl BackupId {
    /// A new id for a backup starting now, with a random suffix.
    pub fn new(
        namespace: Namespace,
        database: &str,
        taken_at: DateTime<Utc>,
    ) -> Result<Self, NameError> {
        let nonce = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        Self::with_nonce(namespace, database, taken_at, &nonce)
    }

    /// An id with the given suffix (tests, parsing); checks the (real)
    /// database name and drops sub-second precision.
    pub fn with_nonce(
        namespace: Namespace,
        database: &str,
        taken_at: DateTime<Utc>,
        nonce: &str,
    ) -> Result<Self, NameError> {
        check_database_name(database)?;
        // Names carry whole seconds; keep the id equal to its parsed name.
        let taken_at = DateTime::from_timestamp(taken_at.timestamp(), 0).unwrap_or(taken_at);
        Ok(Self {
            namespace,
            database: database.to_string(),
            taken_at,
            nonce: nonce.to_string(),
        })
    }

    /// A new id for a physical base backup of the cluster
    /// `system_identifier` starting now: `<namespace>/.cluster-<id>/<stamp>`.
    pub fn base_backup(
        namespace: Namespace,
        system_identifier: u64,
        taken_at: DateTime<Utc>,
    ) -> Self {
        Self::new(namespace, &cluster_database(system_identifier), taken_at)
            .expect("a cluster name is valid by construction")
    }

    /// The cluster's system identifier if this is a base backup's id.
    pub fn system_identifier(&self) -> Option<u64> {
        cluster_of(&self.database)
    }

    /// The database as people read it: its real name, or `cluster <id>`
    /// for a base backup.
    pub fn database_label(&self) -> String {
        match self.system_identifier() {
            Some(id) => format!("cluster {id}"),
            None => self.database.clone(),
        }
    }

    /// `yyyymmddThhmmssZ-<nonce>`: sorts by time.
    pub fn stamp(&self) -> String {
        format!("{}-{}", self.taken_at.format(STAMP_FORMAT), self.nonce)
    }

    /// `<namespace>/<database segment>/<stamp>/`
    pub fn prefix(&self) -> String {
        format!("{self}/")
    }

    /// Key of the encrypted dump, `<prefix>data.pgdump.pgp`.
    pub fn data_key(&self) -> String {
        format!("{}{DATA_FILE}", self.prefix())
    }

    /// Key of the manifest, `<prefix>manifest.json`.
    pub fn manifest_key(&self) -> String {
        format!("{}{MANIFEST_FILE}", self.prefix())
    }

    /// Key of the manifest signature, `<prefix>manifest.json.sig`.
    pub fn signature_key(&self) -> String {
        format!("{}{SIGNATURE_FILE}", self.prefix())
    }

    /// Key of the record of one restore drill run of this backup,
    /// `_drills/<namespace>/<database segment>/<stamp>/<run>.json`: one
    /// record per run (create-only), so a later drill never replaces an
    /// earlier one's record. `run` is a stamp of when the drill ran
    /// (`crate::drill::new_run_id`), so records sort by time.
    pub fn drill_key(&self, run: &str) -> String {
        format!("{DRILLS_PREFIX}{self}/{run}.json")
    }

    /// Where releases before run ids kept this backup's one drill record,
    /// `_drills/<namespace>/<database segment>-<stamp>.json` (still read).
    pub fn legacy_drill_key(&self) -> String {
        format!(
            "{DRILLS_PREFIX}{}/{}-{}.json",
            self.namespace,
            database_segment(&self.database),
            self.stamp()
        )
    }

    /// The backup (and run, for keys with one) a drill record's key names;
    /// `None` for a key of neither layout.
    pub fn parse_drill_key(key: &str) -> Option<(BackupId, Option<String>)> {
        let rest = key.strip_prefix(DRILLS_PREFIX)?.strip_suffix(".json")?;
        if let Some((id, run)) = rest.rsplit_once('/')
            && let Ok(id) = id.parse::<BackupId>()
        {
            return Some((id, Some(run.to_string())));
        }
        // Legacy: `<namespace>/<segment>-<stamp>`, the stamp 23 characters.
        let (ns, name) = rest.split_once('/')?;
        let cut = name.len().checked_sub(24)?;
        let (segment, stamp) = (name.get(..cut)?, name.get(cut + 1..)?);
        if name.as_bytes()[cut] != b'-' {
            return None;
        }
        let id = format!("{ns}/{segment}/{stamp}").parse().ok()?;
        Some((id, None))
    }

    /// Parses any object key inside a backup; returns the id and the file name.
    pub fn parse_key(key: &str) -> Result<(BackupId, String), NameError> {
        let bad = || NameError::NotABackup(key.to_string());
        let mut parts = key.splitn(4, '/');
        let (ns, db, stamp, file) = (
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
        );
        let namespace = Namespace::new(ns).map_err(|_| bad())?;
        let database = parse_database_segment(db).map_err(|_| bad())?;
        let (time, nonce) = stamp.split_once('-').ok_or_else(bad)?;
        if nonce.is_empty() || !nonce.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let taken_at = NaiveDateTime::parse_from_str(time, STAMP_FORMAT)
            .map_err(|_| bad())?
            .and_utc();
        if file.is_empty() || file.contains('/') {
            return Err(bad());
        }
        let id = BackupId::with_nonce(namespace, &database, taken_at, nonce).map_err(|_| bad())?;
        Ok((id, file.to_string()))
    }
}

impl fmt::Display for BackupId {
    /// `<namespace>/<database segment>/<stamp>`: the backup id as keys,
    /// manifests and `--backup` spell it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let db = database_segment(&self.database);
        write!(f, "{}/{db}/{}", self.namespace, self.stamp())
    }
}

impl FromStr for BackupId {
    type Err = NameError;
    /// Parses `<namespace>/<database segment>/<stamp>` (a trailing `/` is
    /// allowed).
    fn from_str(s: &str) -> Result<Self, NameError> {
        let key = format!("{}/{MANIFEST_FILE}", s.trim_end_matches('/'));
        BackupId::parse_key(&key)
            .map(|(id, _)| id)
            .map_err(|_| NameError::NotABackup(s.to_string()))
    }
}

impl PartialOrd for BackupId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BackupId {
    /// Oldest first; ties broken by the rest of the name for a stable order.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.taken_at, &self.namespace, &self.database, &self.nonce).cmp(&(
            other.taken_at,
            &other.namespace,
            &other.database,
            &other.nonce,
        ))
    }
}

/// The prefix of every namespace [`namespace_for_branch`] makes: retention
/// may abandon these (and only these, besides the policy's
/// `branch_namespaces`) once they go quiet.
pub const BRANCH_NAMESPACE_PREFIX: &str = "br-";

/// Derives a valid, deterministic branch namespace from a branch name such
/// as `feature/Fix-Login`: `br-`, then the name lower-cased with other
/// characters folded to `-`, and a short hash appended whenever the name had
/// to change, so two different branches never share a namespace.
pub fn namespace_for_branch(branch: &str) -> Namespace {
    let room = MAX_NAME_BYTES - BRANCH_NAMESPACE_PREFIX.len();
    if branch.len() <= room
        && let Ok(ns) = Namespace::new(&format!("{BRANCH_NAMESPACE_PREFIX}{branch}"))
    {
        return ns;
    }
    let mut slug: String = branch
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    while slug.contains("--") {
        slug = slug.replace("--", "-");
    }
    let slug = slug.trim_matches('-');
    let hash = {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(branch.as_bytes())[..4])
    };
    let head: String = slug.chars().take(room - 9).collect();
    let head = head.trim_end_matches('-');
    let name = if head.is_empty() {
        format!("{BRANCH_NAMESPACE_PREFIX}{hash}")
    } else {
        format!("{BRANCH_NAMESPACE_PREFIX}{head}-{hash}")
    };
    Namespace::new(&name).expect("slug is valid by construction")
}

crate::error::permanent!(NameError);

/// Names come from settings and arguments (a namespace, a backup id).
impl crate::error::Failure for NameError {
    fn failure_kind(&self) -> crate::error::FailureKind {
        crate::error::FailureKind::Config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn id(ns: &str, secs: i64, nonce: &str) -> BackupId {
        BackupId::with_nonce(
            Namespace::new(ns).unwrap(),
            "app",
            Utc.timestamp_opt(secs, 0).unwrap(),
            nonce,
        )
        .unwrap()
    }

    #[test]
    fn keys_round_trip_and_sort_by_time() {
        let a = id("production", 1_700_000_000, "00000a");
        assert_eq!(
            a.data_key(),
            "production/app/20231114T221320Z-00000a/data.pgdump.pgp"
        );
        let (parsed, file) = BackupId::parse_key(&a.manifest_key()).unwrap();
        assert_eq!(parsed, a);
        assert_eq!(file, MANIFEST_FILE);
        assert_eq!(a.to_string().parse::<BackupId>().unwrap(), a);
        let b = id("production", 1_700_000_001, "000000");
        assert!(a < b);
        assert!(a.data_key() < b.data_key());
    }

    #[test]
    fn same_second_ids_differ() {
        let ns = Namespace::new("production").unwrap();
        let now = Utc::now();
        let ids: std::collections::HashSet<String> = (0..50)
            .map(|_| BackupId::new(ns.clone(), "app", now).unwrap().stamp())
            .collect();
        assert_eq!(ids.len(), 50);
    }

    #[test]
    fn foreign_keys_are_rejected() {
        for key in [
            "random.txt",
            "production/app/notastamp/data.pgdump.pgp",
            "production/app/20231114T221320Z-zz/data",
            "Prod/app/20231114T221320Z-00000a/data",
            "production/app/20231114T221320Z-00000a/",
            "_drills/production/app.json",
        ] {
            assert!(BackupId::parse_key(key).is_err(), "{key}");
        }
    }

    #[test]
    fn base_backups_have_a_series_no_database_can_share() {
        let ns = Namespace::new("production").unwrap();
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let base = BackupId::base_backup(ns.clone(), 7_312_345_678_901_234_567, at);
        assert_eq!(base.system_identifier(), Some(7_312_345_678_901_234_567));
        let key = base.manifest_key();
        assert!(
            key.starts_with("production/.cluster-7312345678901234567/20231114T221320Z-"),
            "{key}"
        );
        let (parsed, _) = BackupId::parse_key(&key).unwrap();
        assert_eq!(parsed, base);
        assert_eq!(parsed.database_label(), "cluster 7312345678901234567");
        // A real database of the same spelling is another series.
        let lookalike =
            BackupId::with_nonce(ns, ".cluster-7312345678901234567", at, "000001").unwrap();
        assert_eq!(lookalike.system_identifier(), None);
        assert!(
            lookalike.to_string().starts_with("production/%2Ecluster-"),
            "{lookalike}"
        );
        assert_ne!(lookalike.database, base.database);
        for bad in [
            ".cluster-",
            ".cluster-01",
            ".cluster-x",
            ".cluster-99999999999999999999",
        ] {
            assert!(parse_database_segment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn branch_names_become_distinct_valid_namespaces() {
        assert_eq!(namespace_for_branch("main").as_str(), "br-main");
        assert_eq!(namespace_for_branch("production").as_str(), "br-production");
        let a = namespace_for_branch("feature/Fix-Login");
        assert!(a.as_str().starts_with("br-feature-fix-login-"), "{a}");
        assert_eq!(a, namespace_for_branch("feature/Fix-Login"));
        assert_ne!(a, namespace_for_branch("feature/fix-login"));
        let hostile = namespace_for_branch(&format!("x'; DROP DATABASE x; --{}é", "a".repeat(100)));
        assert!(hostile.as_str().len() <= 63);
        assert!(Namespace::new(hostile.as_str()).is_ok());
        assert!(hostile.as_str().starts_with(BRANCH_NAMESPACE_PREFIX));
        assert!(namespace_for_branch("ééé").as_str().starts_with("br-"));
    }
}

/// Matches a namespace against a pattern where `*` stands for any run of
/// characters (`production`, `feature-*`, `*`).
/// Iterative with one backtrack point (the last `*`): linear in practice,
/// never exponential however many stars a pattern has. The one glob matcher:
/// replication and retention patterns both use it.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let (pat, s) = (pattern.as_bytes(), name.as_bytes());
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod pattern_tests {
    use super::pattern_matches;

    #[test]
    fn globs() {
        assert!(pattern_matches("production", "production"));
        assert!(!pattern_matches("production", "production-2"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("feature-*", "feature-x"));
        assert!(!pattern_matches("feature-*", "bugfix-x"));
        assert!(pattern_matches("*-prod*", "eu-production"));
        assert!(!pattern_matches("a*b", "ac"));
    }
}

#[cfg(test)]
mod segment_tests {
    use super::*;
    use chrono::TimeZone;

    fn id_of(database: &str) -> BackupId {
        BackupId::with_nonce(
            Namespace::new("production").unwrap(),
            database,
            Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            "00000a",
        )
        .unwrap()
    }

    #[test]
    fn any_postgres_name_round_trips_through_keys_and_ids() {
        let long_ascii = "x".repeat(MAX_NAME_BYTES);
        let long_utf8 = format!("{}é", "x".repeat(MAX_NAME_BYTES - 2));
        for (name, segment) in [
            ("Ünï app", "%C3%9Cn%C3%AF%20app"),
            ("a%2Fb", "a%252Fb"),
            ("a/b", "a%2Fb"),
            (".hidden", "%2Ehidden"),
            ("..", "%2E."),
            (".", "%2E"),
            ("x y", "x%20y"),
            ("a\"b; DROP", "a%22b%3B%20DROP"),
            ("café.v2", "caf%C3%A9.v2"),
            (long_ascii.as_str(), long_ascii.as_str()),
        ] {
            assert_eq!(database_segment(name), segment, "{name:?}");
            assert_eq!(parse_database_segment(segment).unwrap(), name);
            let id = id_of(name);
            let key = id.manifest_key();
            assert_eq!(
                key,
                format!("production/{segment}/20231114T221320Z-00000a/manifest.json")
            );
            let (parsed, file) = BackupId::parse_key(&key).unwrap();
            assert_eq!((&parsed, file.as_str()), (&id, MANIFEST_FILE));
            assert_eq!(parsed.database, name);
            assert_eq!(id.to_string().parse::<BackupId>().unwrap(), id);
            assert_eq!(id.prefix(), format!("{id}/"));
        }
        let seg = database_segment(&long_utf8);
        assert_eq!(parse_database_segment(&seg).unwrap(), long_utf8);
        assert_ne!(database_segment("a/b"), database_segment("a%2Fb"));
    }

    #[test]
    fn names_of_the_old_rule_keep_their_keys() {
        for name in ["app", "My_DB-2.0", "a.b.c", "0db", "Z"] {
            assert_eq!(database_segment(name), name);
            let key = format!("production/{name}/20231114T221320Z-00000a/data.pgdump.pgp");
            let (id, _) = BackupId::parse_key(&key).unwrap();
            assert_eq!(id.database, name);
            assert_eq!(id.data_key(), key);
        }
    }

    #[test]
    fn non_canonical_segments_are_refused() {
        for seg in [
            "", "%c3%9C",  // lower-case hex
            "%61pp",   // `a`, which stands as it is
            "a%2E",    // a `.` that needs no escape
            "a%5F",    // `_`
            ".hidden", // a bare leading dot
            "..", "%2", // truncated escapes
            "%", "ab%G0", "%FF", // invalid UTF-8
            "%C3", // a cut UTF-8 sequence
            "%00", // NUL
            "a b", // bytes no encoder writes
            "a/b", "é", "a+b",
        ] {
            assert!(
                matches!(
                    parse_database_segment(seg),
                    Err(NameError::DatabaseSegment(_))
                ),
                "{seg:?}"
            );
            let key = format!("production/{seg}/20231114T221320Z-00000a/manifest.json");
            assert!(BackupId::parse_key(&key).is_err(), "{key:?}");
        }
        let too_long = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(parse_database_segment(&too_long).is_err());
        let too_long_utf8 = "%C3%A9".repeat(32); // 64 bytes decoded
        assert!(parse_database_segment(&too_long_utf8).is_err());
    }

    #[test]
    fn what_postgres_would_not_keep_is_refused_with_a_reason() {
        let now = Utc::now();
        let ns = Namespace::new("production").unwrap();
        for name in ["", "a\0b", &"x".repeat(MAX_NAME_BYTES + 1)] {
            let err = BackupId::new(ns.clone(), name, now).unwrap_err();
            assert_eq!(err, NameError::Database(name.to_string()));
            assert!(err.to_string().contains("1-63 bytes"), "{err}");
        }
    }
}
