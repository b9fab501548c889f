//! No password is printed, whatever fails at start-up.

use super::*;

/// Secrets never printed: a Redis password in the URL appears in no line of a failed
/// start, of a running service's log and answers, or of a report's recorded command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_password_is_never_printed() {
    const PASSWORD: &str = "pw-7f3a9c-secret";
    const WRONG: &str = "wrong-pw-1b2c3d";
    let (_local, with) = flyrtech_tests::redis_with_password(PASSWORD).await;

    // A wrong password: the start fails, naming the URL without it.
    let out = flyrtech()
        .args(["serve", "--listen", "127.0.0.1:0", "--no-seed"])
        .env("FLYRTECH_REDIS_URL", with(WRONG))
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{printed}");
    assert!(!printed.contains(WRONG), "{printed}");
    assert!(printed.contains(&with("***")), "{printed}");

    // The right one: a running service, asked for its readiness, metrics, a missing journey and
    // a bad body; then stopped. Nothing it printed or answered holds the password.
    let serving = Serving::start_with(
        &["--no-seed"],
        &[
            ("FLYRTECH_REDIS_URL", &with(PASSWORD)),
            ("RUST_LOG", "debug"),
        ],
    );
    let client = http();
    let mut answers = String::new();
    for (method, path, body) in [
        ("GET", "/ready", None),
        ("GET", "/metrics", None),
        ("GET", "/api/journeys/JRN-404", None),
        ("PUT", "/api/journeys/JRN-404/status", Some("{not json")),
    ] {
        let url = serving.url(path);
        let request = match (method, body) {
            ("PUT", Some(body)) => client
                .put(url)
                .header("content-type", "application/json")
                .body(body),
            _ => client.get(url),
        };
        answers.push_str(&request.send().await.unwrap().text().await.unwrap());
    }
    let (_, log) = serving.terminate();
    assert!(log.contains("serving the journey API"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
    assert!(!answers.contains(PASSWORD), "{answers}");
}

/// Every way a start can fail prints no password: URLs that do not parse (a password
/// with `/`, `?` and `#`), without a scheme, lists of seeds, a config file that is not TOML, an
/// unreachable server, a wrong password, TLS refused by a plain server, and a lock node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_start_up_failure_prints_a_password() {
    const PASSWORD: &str = "Sl/ash?Pw#991";
    let (_local, url, _redis) = private_redis().await;
    let port = url.rsplit(':').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(
        &bad_toml,
        format!("redis_url = \"redis://:{PASSWORD}@127.0.0.1:{port}\nstrategy = \"lua\"\n"),
    )
    .unwrap();
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "a URL that does not parse",
            vec![format!("--redis-url=redis://:{PASSWORD}@127.0.0.1:{port}")],
        ),
        (
            "no scheme",
            vec![format!("--redis-url=:{PASSWORD}@127.0.0.1:{port}")],
        ),
        (
            "seeds",
            vec![format!(
                "--redis-url=redis://:{PASSWORD}@127.0.0.1:1,redis://u:{PASSWORD}@127.0.0.1:2"
            )],
        ),
        (
            "a config file that is not TOML",
            vec![format!("--config={}", bad_toml.display())],
        ),
        (
            "unreachable",
            vec!["--redis-url=redis://:pw-unreachable-77@127.0.0.1:1".to_owned()],
        ),
        (
            "a wrong password",
            vec![format!("--redis-url=redis://:wrong-pw-88@127.0.0.1:{port}")],
        ),
        (
            "TLS refused",
            vec![format!("--redis-url=rediss://:tls-pw-99@127.0.0.1:{port}")],
        ),
        (
            "a lock node",
            vec![
                format!("--redis-url={url}"),
                "--strategy=redlock".to_owned(),
                format!("--lock-urls=redis://:{PASSWORD}@127.0.0.1:1"),
            ],
        ),
    ];
    for (what, args) in cases {
        let out = flyrtech()
            .args(&args)
            .args(["serve", "--listen", "127.0.0.1:0", "--no-seed"])
            .env_remove("FLYRTECH_REDIS_URL")
            .env_remove("REDIS_URL")
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{what}: {printed}");
        assert!(printed.contains("error: "), "{what}: {printed}");
        for secret in [
            PASSWORD,
            "Pw#991",
            "pw-unreachable-77",
            "wrong-pw-88",
            "tls-pw-99",
        ] {
            assert!(!printed.contains(secret), "{what}: {printed}");
        }
    }
}
