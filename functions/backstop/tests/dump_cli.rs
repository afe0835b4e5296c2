//! `backstop dump` as a process: configuration errors name the variable and
//! exit non-zero before anything is contacted.

use std::process::Command;

fn dump_with(env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
    cmd.arg("dump").env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run backstop");
    assert!(
        out.stdout.is_empty(),
        "no JSON result on failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_variables_are_named_and_fail() {
    let (ok, err) = dump_with(&[]);
    assert!(!ok);
    assert!(err.contains("BACKSTOP_DATABASE_URL"), "{err}");

    let url = (
        "BACKSTOP_DATABASE_URL",
        "postgres://backstop@127.0.0.1:1/app",
    );
    let (ok, err) = dump_with(&[url]);
    assert!(!ok);
    assert!(err.contains("BACKSTOP_GCS_BUCKET"), "{err}");

    let bucket = ("BACKSTOP_GCS_BUCKET", "backstop-backups");
    let (ok, err) = dump_with(&[url, bucket]);
    assert!(!ok);
    assert!(err.contains("BACKSTOP_RECIPIENTS"), "{err}");

    let recipients = ("BACKSTOP_RECIPIENTS", "file:/nonexistent/backup.pub.asc");
    let (ok, err) = dump_with(&[url, bucket, recipients]);
    assert!(!ok);
    assert!(err.contains("BACKSTOP_SIGNING_KEY"), "{err}");

    let (ok, err) = dump_with(&[url, bucket, recipients, ("BACKSTOP_NAMESPACE", "Not Valid")]);
    assert!(!ok);
    assert!(err.contains("BACKSTOP_NAMESPACE"), "{err}");
}
