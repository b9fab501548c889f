//! The dataset commands as processes: a migration killed part-way, the legacy import's exit
//! status.

use super::*;

/// `flyrtech migrate` SIGKILLed part-way, then run again: every journey ends in the new layout
/// exactly once, unchanged, and a third run has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_killed_part_way_finishes_when_run_again() {
    use flyrtech_core::{JourneyId, JourneyStore};
    use flyrtech_infrastructure::{RedisJourneyStore, StoreConfig, Strategy};
    use futures::StreamExt;

    let (_local, url, redis) = private_redis().await;
    let store = RedisJourneyStore::new(redis.clone(), &StoreConfig::new(Strategy::Lua))
        .await
        .unwrap();
    flyrtech_infrastructure::dataset::admit(&redis, Strategy::Lua)
        .await
        .unwrap();
    let total = 5_000;
    let ids: Vec<JourneyId> = (0..total)
        .map(|n| JourneyId::parse(format!("MOVE-{n}")).unwrap())
        .collect();
    let journeys: Vec<_> = ids
        .iter()
        .map(|id| flyrtech_tests::journey(id, 3))
        .collect();
    futures::stream::iter(&journeys)
        .for_each_concurrent(64, |j| {
            let store = &store;
            async move { store.create(j).await.unwrap() }
        })
        .await;

    let migrate = || {
        let mut cmd = flyrtech();
        cmd.args(["--redis-url", &url, "migrate", "--to", "hash"]);
        cmd
    };
    let mut doomed = migrate()
        .args(["--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Each conversion deletes its source: poll (bounded) until a few hundred have happened.
    let mut converted = 0;
    for _ in 0..3000 {
        converted = calls(&redis, "del").await;
        if converted >= 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(converted >= 200, "the migration never started converting");
    doomed.kill().unwrap(); // SIGKILL
    doomed.wait().unwrap();
    let mut in_hash = 0;
    for id in &ids {
        let (document, hash): (bool, bool) = redis::pipe()
            .exists(flyrtech_infrastructure::keys::journey_document(id))
            .exists(flyrtech_infrastructure::keys::journey_hash(id))
            .query_async(&mut redis.shared())
            .await
            .unwrap();
        assert!(document != hash, "{id}: in both layouts or in neither");
        in_hash += usize::from(hash);
    }
    assert!(in_hash < total, "killed too late: everything was converted");

    let out = migrate().output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "{total} listed; {} converted, {in_hash} already there",
            total - in_hash
        )),
        "{stdout}"
    );
    let hash = RedisJourneyStore::new(redis.clone(), &StoreConfig::new(Strategy::Hash))
        .await
        .unwrap();
    for j in &journeys {
        assert_eq!(&hash.get(&j.id).await.unwrap(), j);
    }
    let again = migrate().output().unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("0 converted, {total} already there")),
        "{stdout}"
    );
    // The old layout's strategies are now refused, with the way back named.
    let refused = flyrtech()
        .args([
            "--redis-url",
            &url,
            "--strategy",
            "lua",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("flyrtech migrate --to document"),
        "{stderr}"
    );
}

/// `flyrtech import-legacy`: exit status 3 and each skipped journey named when something could
/// not be imported, 0 once everything is in (kept journeys count as in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_legacy_reports_what_it_skipped_in_its_exit_status() {
    let (_local, url, redis) = private_redis().await;
    let good = r#"{"Id":"OLD-1","PassengerName":"A B","PassengerEmail":"a@b.c","BookingDate":"2025-12-01T10:30:00Z","Status":"Confirmed","TotalPrice":850.50,"Segments":[],"Metadata":{}}"#;
    let () = redis::pipe()
        .set("journey:OLD-1", good)
        .ignore()
        .set("journey:OLD-2", "not json")
        .ignore()
        .set("journey:ids", r#"["OLD-1","OLD-2"]"#)
        .ignore()
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    let import = |extra: &[&str]| {
        flyrtech()
            .args(["--redis-url", &url, "--strategy", "hash", "import-legacy"])
            .args(extra)
            .output()
            .unwrap()
    };
    let dry = import(&["--dry-run"]);
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(dry.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("would import 1 in the hash layout"),
        "{stdout}"
    );

    let first = import(&[]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("imported 1 in the hash layout, 0 kept"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped OLD-2: not a journey document"),
        "{stdout}"
    );

    let () = redis::cmd("SET")
        .arg("journey:OLD-2")
        .arg(good.replace("OLD-1", "OLD-2"))
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    let second = import(&[]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("imported 1 in the hash layout, 1 kept"),
        "{stdout}"
    );
}
