//! `backstop dump`'s progress line, as a person and as a script see it, on
//! the local stack: under a pseudo-terminal (util-linux `script`) stderr
//! shows the line, redrawn in place, ending with the exact count of bytes
//! uploaded, which is the result's `ciphertext_bytes`; in a pipe, with
//! `--no-progress` or with JSON logs, there is no line at all. The JSON
//! result on stdout is the same in every case.
//!
//!   tests/stack/stack.sh run -- cargo test -p backstop-cli --test dump_progress

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::{database_url, psql, var};

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database of a few MiB, keys, and the environment a dump runs with.
struct Setup {
    _keys: tempfile::TempDir,
    out: tempfile::TempDir,
    url: String,
    namespace: String,
    env: Vec<(&'static str, String)>,
}

impl Setup {
    fn new() -> Self {
        let tag = format!("{:08x}", rand::random::<u32>());
        let keys = tempfile::tempdir().unwrap();
        let keygen = Command::new(env!("CARGO_BIN_EXE_backstop"))
            .args(["keygen", "--out", keys.path().to_str().unwrap()])
            .output()
            .unwrap();
        ok(&keygen, "keygen");
        let key = |f: &str| format!("file:{}", keys.path().join(f).display());
        let source = format!("progress_{tag}");
        psql("postgres", &format!("CREATE DATABASE {source}"));
        psql(
            &source,
            "CREATE TABLE events (id int PRIMARY KEY, body text NOT NULL); \
             INSERT INTO events SELECT g, md5(g::text) || repeat('é', 100) FROM generate_series(1, 30000) g",
        );
        Setup {
            env: vec![
                ("BACKSTOP_RECIPIENTS", key("backup.pub.asc")),
                ("BACKSTOP_SIGNING_KEY", key("signing.sec.asc")),
                ("BACKSTOP_PG_BINDIR", var("PG_BINDIR")),
            ],
            _keys: keys,
            out: tempfile::tempdir().unwrap(),
            url: database_url(&source),
            namespace: format!("progress-{tag}"),
        }
    }

    fn dump_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["dump", "--database-url", &self.url]
            .into_iter()
            .chain(["--namespace", &self.namespace])
            .map(String::from)
            .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }

    /// A dump with stdout and stderr in pipes: (result, stderr).
    fn dump_in_pipes(&self, extra: &[&str]) -> (Value, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
            .args(self.dump_args(extra))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        ok(&out, "dump in pipes");
        (
            serde_json::from_slice(&out.stdout).expect("the JSON result on stdout"),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A dump whose stderr is a pseudo-terminal (`script` runs it there;
    /// stdout goes to a file): (result, what the terminal showed).
    fn dump_on_a_terminal(&self, extra: &[&str], env: &[(&str, &str)]) -> (Value, String) {
        let result: PathBuf = self.out.path().join("result.json");
        let mut line = shell_quote(env!("CARGO_BIN_EXE_backstop"));
        for a in self.dump_args(extra) {
            line = format!("{line} {}", shell_quote(&a));
        }
        line = format!("{line} >{}", shell_quote(result.to_str().unwrap()));
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .output()
            .expect("run util-linux script (package bsdutils / util-linux)");
        ok(&out, "dump under script");
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = std::fs::read(&result).unwrap();
        let value = serde_json::from_slice(&json).unwrap_or_else(|e| {
            panic!(
                "no JSON result ({e}): {} / terminal: {shown}",
                String::from_utf8_lossy(&json)
            )
        });
        (value, shown)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The progress lines of `backup_id` the terminal showed, in order, each
/// redraw on its own (the line is redrawn after `\r` and cleared by ESC[K).
fn progress_lines(shown: &str, backup_id: &str) -> Vec<String> {
    let label = format!("dumping {backup_id}: ");
    shown
        .split(['\r', '\n'])
        .map(|l| l.trim_start_matches("\x1b[K"))
        .filter_map(|l| l.strip_prefix(&label).map(str::to_string))
        .collect()
}

/// Bytes from the line's `12.3 MiB` form.
fn bytes_of(amount: &str) -> f64 {
    let (v, unit) = amount.split_once(' ').expect("a number and a unit");
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other:?}"),
    };
    v.parse::<f64>().unwrap() * scale
}

#[test]
fn a_terminal_shows_the_progress_line_and_a_pipe_does_not() {
    let setup = Setup::new();

    let (result, shown) = setup.dump_on_a_terminal(&[], &[]);
    let backup_id = result["backup_id"].as_str().expect("backup_id").to_string();
    let ciphertext = result["ciphertext_bytes"].as_u64().unwrap();
    let plaintext = result["plaintext_bytes"].as_u64().unwrap();
    let lines = progress_lines(&shown, &backup_id);
    assert!(
        lines.len() >= 2,
        "the first line and the last at least: {lines:?} in {shown:?}"
    );
    assert!(
        lines[0].contains(" / ~"),
        "the line is measured against the size estimate: {lines:?}"
    );
    // The last line: "<read> read, <compressed> compressed, <uploaded>
    // uploaded (<bytes> bytes) in <elapsed>".
    let last = lines.last().unwrap();
    let (amounts, bytes) = last
        .rsplit_once(" uploaded (")
        .unwrap_or_else(|| panic!("last line {last:?}"));
    let uploaded: u64 = bytes.split(' ').next().unwrap().parse().unwrap();
    assert!(uploaded > 0, "{last}");
    assert_eq!(
        uploaded, ciphertext,
        "the bytes counted on the way to the store are the stored ciphertext: {last}"
    );
    let parts: Vec<&str> = amounts.split(", ").collect();
    let read = bytes_of(parts[0].strip_suffix(" read").expect("read first"));
    assert!(
        (read - plaintext as f64).abs() <= 0.05 * 1024.0 * 1024.0,
        "pg_dump's output read ({read}) is the dump's plaintext ({plaintext}): {last}"
    );
    let compressed = bytes_of(
        parts[1]
            .strip_suffix(" compressed")
            .expect("then compressed"),
    );
    assert!(
        compressed > 0.0 && compressed < read,
        "the compression's output is counted: {last}"
    );

    let (result, stderr) = setup.dump_in_pipes(&[]);
    let backup_id = result["backup_id"].as_str().unwrap();
    assert!(
        progress_lines(&stderr, backup_id).is_empty() && !stderr.contains('\r'),
        "no progress line in a pipe: {stderr:?}"
    );
    assert!(
        stderr.contains("dump complete"),
        "the logs still are: {stderr}"
    );

    for (what, extra, env) in [
        ("--no-progress", &["--no-progress"][..], &[][..]),
        ("JSON logs", &[][..], &[("BACKSTOP_LOG_FORMAT", "json")][..]),
    ] {
        let (result, shown) = setup.dump_on_a_terminal(extra, env);
        let backup_id = result["backup_id"].as_str().unwrap();
        assert!(
            progress_lines(&shown, backup_id).is_empty() && !shown.contains("\x1b[K"),
            "no progress line with {what}: {shown:?}"
        );
        assert!(
            shown.contains("dump complete") || shown.contains("dump_complete"),
            "the terminal shows the logs with {what}: {shown}"
        );
    }
}
