//! The errors an operator meets first: one line per error, no backtrace; a report whose reader
//! has gone.

use super::*;
/// An expected failure reads like a CLI's error whatever `RUST_BACKTRACE` says: one `error:`
/// line with its causes, no stack backtrace, exit status 1.
#[test]
fn an_operator_error_is_one_line_without_a_backtrace() {
    let out = flyrtech()
        .args(["--redis-url", "redis://127.0.0.1:1", "audit"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("Connection refused"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert!(!stderr.contains("Stack"), "{stderr}");
}

#[test]
fn a_report_whose_reader_has_gone_is_not_a_panic() {
    // The pipe's read end is closed before the command starts: its first line meets EPIPE, as
    // `flyrtech migrate --to hash | head -1` does once head has its line.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = flyrtech()
        .args(["redis-acl", "--role", "audit"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // With a reader, the same command prints its line.
    let printed = flyrtech()
        .args(["redis-acl", "--role", "audit"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&printed.stdout).contains("ACL SETUSER"));
}
