//! Commands that hold unwrapped secret keys run without core dumps: a
//! crash must not write the backup or signing secret key to disk.
//!
//! `backstop decrypt` is started with its secret key "file" a FIFO nobody
//! writes to, so it blocks while loading the key; its `/proc/PID/limits` is
//! then read from outside.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The soft and hard core-file limits of a running process.
fn core_limits(pid: u32) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))?;
    let mut f = line["Max core file size".len()..].split_whitespace();
    Some((f.next()?.to_string(), f.next()?.to_string()))
}

#[test]
#[cfg(target_os = "linux")]
fn decrypt_runs_with_core_dumps_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("key.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success(),
        "mkfifo"
    );
    // Start with core dumps allowed (soft limit raised as far as the hard
    // limit goes), as a developer's shell might.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -c unlimited 2>/dev/null || ulimit -c \"$(ulimit -H -c)\"; exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_backstop"),
            "decrypt",
            "--key",
        ])
        .arg(format!("file:{}", fifo.display()))
        .arg(dir.path().join("in.pgp"))
        .arg(dir.path().join("out"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the exec'd backstop blocks on the key (the limits of `sh`
    // before the exec are not the answer).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = None;
    while Instant::now() < deadline {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.is_some_and(|e| e.to_string_lossy().contains("backstop")) {
            std::thread::sleep(Duration::from_millis(300));
            seen = core_limits(pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (soft, hard) = seen.expect("backstop decrypt did not start");
    assert_eq!(
        (soft.as_str(), hard.as_str()),
        ("0", "0"),
        "backstop decrypt may write a core file holding the secret key"
    );
}
