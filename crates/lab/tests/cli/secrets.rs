//! No password is printed in a report.

use super::*;

/// A report records its command line with the Redis password replaced, and prints none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_records_its_command_line_without_the_password() {
    const PASSWORD: &str = "pw-7f3a9c-secret";
    let (_local, with) = flyrtech_tests::redis_with_password(PASSWORD).await;

    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("backlog.json");
    let out = lab()
        .args(["--redis-url", &with(PASSWORD), "backlog", "--entries", "50"])
        .args(["--journeys", "5", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    let report = std::fs::read_to_string(&json).unwrap();
    assert!(!report.contains(PASSWORD), "{report}");
    assert!(report.contains("redis://:***@127.0.0.1"), "{report}");
    assert!(!printed.contains(PASSWORD), "{printed}");
}
