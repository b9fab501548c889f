//! `serve` as a process: SIGTERM, SIGKILL on its embedded Redis, a leftover server in its data
//! directory, a Redis that may evict journeys.

use super::*;

/// `flyrtech serve` as an operator runs it: a private redis-server, the sample journeys, the
/// chosen strategy, and on SIGTERM a graceful stop that also stops the private server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_until_sigterm_and_cleans_up() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let serving = Serving::start(&["--strategy", "hash", "--data-dir", dir]);
    let client = http();
    let get = |path: String| {
        let request = client.get(path).send();
        async move {
            request
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let ready = get(serving.url("/ready")).await;
    assert_eq!(ready["strategy"], "hash");
    let ids = get(serving.url("/api/journeys")).await;
    assert_eq!(ids["count"], 3, "the sample journeys are seeded: {ids}");

    let port = serving.redis_port;
    let (status, log) = serving.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("all in-flight requests finished"), "{log}");
    // The private redis-server went with it, and left its AOF behind.
    assert!(
        !listening(port),
        "the private redis-server on {port} is still running"
    );
    assert!(data.path().join("appendonlydir").is_dir(), "{log}");
}

/// The embedded default persists: `serve` SIGKILLed right after acknowledging an update takes
/// its redis-server with it (no orphan), and the next `serve` on the same data directory serves
/// the update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_on_its_embedded_redis_loses_nothing_and_leaves_no_orphan() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let mut first = Serving::start(&["--strategy", "lua", "--data-dir", dir]);
    let client = http();
    let put = client
        .put(first.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
        .json(&serde_json::json!({"status": "Departed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    first.child.kill().unwrap(); // SIGKILL: no graceful anything
    first.child.wait().unwrap();
    assert!(
        gone_within(first.redis_port, std::time::Duration::from_secs(10)).await,
        "the private redis-server on {} outlived serve",
        first.redis_port
    );

    let second = Serving::start(&["--strategy", "lua", "--data-dir", dir]);
    assert!(second.log.contains("created=0 kept=3"), "{}", second.log);
    let journey: serde_json::Value = client
        .get(second.url("/api/journeys/JRN-001"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(journey["segments"][0]["status"], "Departed", "{journey}");
    assert_eq!(journey["version"], 1);
    let (status, log) = second.terminate();
    assert!(status.success(), "{log}");
}

/// A redis-server left running in the data directory (as where setpriv is missing) is shut down
/// by the next `serve`, which then serves what it had written; a second `serve` on a directory
/// in use is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_server_in_the_data_dir_is_shut_down_and_its_data_kept() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().canonicalize().unwrap();
    let port = flyrtech_infrastructure::local::free_port(false).unwrap();
    let mut leftover = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(dir.join("redis.port"), port.to_string()).unwrap();
    let redis = loop {
        if let Ok(redis) = flyrtech_infrastructure::Redis::connect(
            &flyrtech_infrastructure::RedisSettings::new(format!("redis://127.0.0.1:{port}")),
        )
        .await
        {
            break redis;
        }
        assert!(
            leftover.try_wait().unwrap().is_none(),
            "the leftover server exited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let () = redis::cmd("SET")
        .arg("written-before")
        .arg("kept")
        .query_async(&mut redis.shared())
        .await
        .unwrap();

    let serving = Serving::start(&["--data-dir", dir.to_str().unwrap()]);
    assert!(serving.log.contains("shutting it down"), "{}", serving.log);
    assert!(
        leftover.wait().unwrap().success(),
        "SHUTDOWN ends it cleanly"
    );
    let now =
        flyrtech_infrastructure::Redis::connect(&flyrtech_infrastructure::RedisSettings::new(
            format!("redis://127.0.0.1:{}", serving.redis_port),
        ))
        .await
        .unwrap();
    let kept: Option<String> = redis::cmd("GET")
        .arg("written-before")
        .query_async(&mut now.shared())
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("kept"));

    let refused = flyrtech()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("in use by another flyrtech serve"),
        "{stderr}"
    );
    let (status, log) = serving.terminate();
    assert!(status.success(), "{log}");
}

/// A Redis that may evict journeys (maxmemory-policy allkeys-*) is refused by `serve` and
/// `relay` with the setting and the fix named, unless --allow-eviction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_may_evict_journeys_is_refused() {
    let (_local, url, redis) = private_redis().await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    for command in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["relay", "--drain"][..],
    ] {
        let out = flyrtech()
            .args(["--redis-url", &url])
            .args(command)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command:?}: {stderr}");
        for needle in [
            "maxmemory-policy allkeys-lru",
            "noeviction",
            "--allow-eviction",
        ] {
            assert!(
                stderr.contains(needle),
                "{command:?}: {needle} missing: {stderr}"
            );
        }
    }
    let allowed = flyrtech()
        .args(["--redis-url", &url, "--allow-eviction", "relay", "--drain"])
        .output()
        .unwrap();
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
}
