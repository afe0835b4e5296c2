//! The pipeline step of the README, as processes against the local stack:
//! `backstop keygen`, `backstop dump`, then `backstop restore --branch` into
//! a per-branch database. Checks the JSON results and exit statuses a CI/CD
//! pipeline relies on: success, the derived database name, the drill, and
//! the refusal of a non-empty target without `--replace`.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-cli --test restore_cli

use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{database_url, psql, var};

fn backstop(args: &[&str], env: &[(&str, String)]) -> (Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run backstop");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "backstop {args:?} printed no JSON result ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

/// `backstop dump` of database `source` into `namespace`; asserts success.
fn dump_ok(source: &str, namespace: &str, env: &[(&str, String)]) -> (Output, Value) {
    let url = database_url(source);
    let (out, dumped) = backstop(
        &["dump", "--database-url", &url, "--namespace", namespace],
        env,
    );
    assert!(
        out.status.success(),
        "dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out, dumped)
}

#[test]
fn dump_then_restore_a_branch_database_from_the_command_line() {
    let tag = format!("{:08x}", rand::random::<u32>());
    let keys = tempfile::tempdir().unwrap();
    let (out, _) = backstop(&["keygen", "--out", keys.path().to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = |f: &str| format!("file:{}", keys.path().join(f).display());

    let source = format!("cli_src_{tag}");
    psql("postgres", &format!("CREATE DATABASE {source}"));
    psql(
        &source,
        "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL); \
         INSERT INTO people SELECT g, 'Zoë ' || g FROM generate_series(1, 2500) g",
    );

    let namespace = format!("cli-{tag}");
    let env = vec![
        ("BACKSTOP_RECIPIENTS", key("backup.pub.asc")),
        ("BACKSTOP_SIGNING_KEY", key("signing.sec.asc")),
        ("BACKSTOP_SIGNING_PUBLIC_KEY", key("signing.pub.asc")),
        ("BACKSTOP_BACKUP_KEY", key("backup.sec.asc")),
        ("BACKSTOP_PG_BINDIR", var("PG_BINDIR")),
    ];
    let (_, dumped) = dump_ok(&source, &namespace, &env);
    let backup_id = dumped["backup_id"]
        .as_str()
        .expect("backup_id in the dump result");
    assert!(
        backup_id.starts_with(&format!("{namespace}/{source}/")),
        "{dumped}"
    );

    // A branch name a pipeline might hand over, quotes and all.
    let branch = format!("feature/Fix-Login'; DROP DATABASE postgres; -- {tag}");
    let server = database_url("postgres");
    let restore_args = [
        "restore",
        "--namespace",
        &namespace,
        "--server-url",
        &server,
        "--branch",
        &branch,
        "--no-progress",
    ];
    let (out, restored) = backstop(&restore_args, &env);
    assert!(out.status.success(), "restore: {restored}");
    assert_eq!(restored["success"], true);
    assert_eq!(restored["backup_id"], backup_id);
    assert_eq!(restored["cloud"], "gcs");
    assert_eq!(restored["rows"], 2500);
    assert_eq!(restored["drill"]["success"], true);
    let target = restored["target_database"].as_str().unwrap().to_string();
    assert!(
        target.starts_with("br_feature_fix_login_")
            && target
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "derived database name {target:?}"
    );
    assert_eq!(
        psql(&target, "SELECT count(*) || ' ' || max(name) FROM people"),
        "2500 Zoë 999"
    );

    // The same step again: the branch database now holds tables.
    let (out, refused) = backstop(&restore_args, &env);
    assert!(!out.status.success());
    assert_eq!(refused["success"], false);
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--replace"),
        "{refused}"
    );

    // With --replace it is restored afresh.
    psql(&target, "DELETE FROM people WHERE id > 10");
    let mut replace_args = restore_args.to_vec();
    replace_args.push("--replace");
    let (out, replaced) = backstop(&replace_args, &env);
    assert!(out.status.success(), "restore --replace: {replaced}");
    assert_eq!(replaced["replaced"], true);
    assert_eq!(psql(&target, "SELECT count(*) FROM people"), "2500");

    for db in [&source, &target] {
        psql("postgres", &format!("DROP DATABASE \"{db}\" WITH (FORCE)"));
    }
}

/// Runs backstop without the variables the flags under test stand for.
fn raw(args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("BACKSTOP_DATABASE_URL")
        .env_remove("BACKSTOP_NAMESPACE")
        .output()
        .expect("run backstop")
}

/// Asserts that a process's log lines carry no ANSI colour codes.
fn assert_no_colour(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.is_empty(), "{what}: no log lines to check");
    assert!(
        !stderr.contains('\u{1b}'),
        "{what}: colour codes in logs written to a pipe: {stderr:?}"
    );
}

#[test]
fn errors_name_what_was_typed_and_logs_have_no_colour_off_a_terminal() {
    let tag = format!("{:08x}", rand::random::<u32>());
    let keys = tempfile::tempdir().unwrap();
    let (out, _) = backstop(&["keygen", "--out", keys.path().to_str().unwrap()], &[]);
    assert!(out.status.success());
    let key = |f: &str| format!("file:{}", keys.path().join(f).display());
    let source = format!("cli_typed_{tag}");
    psql("postgres", &format!("CREATE DATABASE {source}"));
    psql(
        &source,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)",
    );
    let namespace = format!("cli-typed-{tag}");
    let env = vec![
        ("BACKSTOP_RECIPIENTS", key("backup.pub.asc")),
        ("BACKSTOP_SIGNING_KEY", key("signing.sec.asc")),
        ("BACKSTOP_SIGNING_PUBLIC_KEY", key("signing.pub.asc")),
        ("BACKSTOP_BACKUP_KEY", key("backup.sec.asc")),
        ("BACKSTOP_PG_BINDIR", var("PG_BINDIR")),
    ];

    // A --database-url error names --database-url, not the variable.
    let bad_url = database_url("");
    let out = raw(
        &[
            "dump",
            "--database-url",
            &bad_url,
            "--namespace",
            &namespace,
        ],
        &env,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("option --database-url"), "{err}");
    assert!(!err.contains("BACKSTOP_DATABASE_URL"), "{err}");

    let (out, dumped) = dump_ok(&source, &namespace, &env);
    assert_no_colour(&out, "dump");
    let backup_id = dumped["backup_id"].as_str().unwrap().to_string();

    // --backup names its namespace: no --namespace needed.
    let server = database_url("postgres");
    let target = format!("cli_typed_to_{tag}");
    let (out, restored) = backstop(
        &[
            "restore",
            "--backup",
            &backup_id,
            "--server-url",
            &server,
            "--target-db",
            &target,
            "--no-progress",
        ],
        &[env.clone(), vec![("NO_COLOR", "1".to_string())]].concat(),
    );
    assert!(out.status.success(), "restore --backup alone: {restored}");
    assert_eq!(restored["backup_id"], backup_id.as_str());
    assert_no_colour(&out, "restore");

    // A --backup error names the option as an option.
    let out = raw(
        &[
            "restore",
            "--backup",
            "not-a-backup",
            "--server-url",
            &server,
            "--target-db",
            &target,
            "--no-progress",
        ],
        &env,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("option --backup"), "{err}");
    assert!(!err.contains("environment variable --backup"), "{err}");
    psql("postgres", &format!("DROP DATABASE {target}"));
    psql("postgres", &format!("DROP DATABASE {source}"));
}
