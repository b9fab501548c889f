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

/// One option through the four layers, on the binary: its default, the file's `[redis-acl]`
/// table over it, `FLYRTECH_USER` over the file, the flag over all; and a file the binary cannot
/// take is a usage error (exit 2) naming the key, the file and the line.
#[test]
fn an_option_layers_default_file_variable_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flyrtech.toml");
    std::fs::write(
        &config,
        "strategy = \"hash\"\n[redis-acl]\nuser = \"from-file\"\n",
    )
    .unwrap();
    let user = |config: Option<&std::path::Path>, env: Option<&str>, flag: Option<&str>| {
        let mut command = flyrtech();
        if let Some(config) = config {
            command.arg(format!("--config={}", config.display()));
        }
        command.arg("redis-acl");
        if let Some(env) = env {
            command.env("FLYRTECH_USER", env);
        }
        if let Some(flag) = flag {
            command.args(["--user", flag]);
        }
        flyrtech_tests::stdout_of(&mut command)
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(user(None, None, None), "flyrtech");
    assert_eq!(user(Some(&config), None, None), "from-file");
    assert_eq!(user(Some(&config), Some("from-env"), None), "from-env");
    assert_eq!(
        user(Some(&config), Some("from-env"), Some("from-flag")),
        "from-flag"
    );

    for (text, expected) in [
        (
            "[redis-acl]\nuser = \"x\"\nrole = \"serve\"\nusr = \"y\"\n",
            ["usr", "line 4"],
        ),
        ("[redis-acl]\n\nrole = \"kitchen\"\n", ["role", "line 3"]),
        ("redis_url = 5\n", ["redis_url", "line 1"]),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = flyrtech()
            .arg(format!("--config={}", config.display()))
            .arg("redis-acl")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        let file = config.display().to_string();
        for part in expected.into_iter().chain([file.as_str()]) {
            assert!(stderr.contains(part), "{text}: {stderr} lacks {part}");
        }
    }
}

/// The keys file of `api-key new` comes from its flag on either side of `new`, or from the
/// file's `[api-key]` table under the flag.
#[test]
fn the_keys_file_is_one_option_however_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flyrtech.toml");
    let in_file = dir.path().join("from-file");
    std::fs::write(
        &config,
        format!("[api-key]\nfile = {:?}\n", in_file.display().to_string()),
    )
    .unwrap();
    let key = |before: &[&str], after: &[&str]| {
        flyrtech_tests::stdout_of(
            flyrtech()
                .arg(format!("--config={}", config.display()))
                .arg("api-key")
                .args(before)
                .args(["new", "ci", "--scope", "read"])
                .args(after),
        )
    };
    let (before, after) = (dir.path().join("before"), dir.path().join("after"));
    key(&[], &[]);
    key(&["--file", before.to_str().unwrap()], &[]);
    key(&[], &["--file", after.to_str().unwrap()]);
    for file in [&in_file, &before, &after] {
        let keys = std::fs::read_to_string(file).unwrap();
        assert_eq!(keys.matches("ci").count(), 1, "{}: {keys}", file.display());
    }
}
