//! The main job and the errors an engineer meets first: `compare` on a private Redis, a missing
//! redis-server, an unknown strategy; and a short `soak`, which runs the service beside it.

use super::*;
#[test]
fn compare_starts_its_own_redis_and_reports_the_incident() {
    let out = lab()
        .args([
            "compare",
            "--strategies",
            "naive,hash",
            "--scenario",
            "incident",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("started a private redis-server"),
        "{stderr}"
    );
    let naive = stdout
        .lines()
        .find(|l| l.starts_with("naive (incident):"))
        .unwrap();
    assert!(
        !naive.ends_with(" 0 lost"),
        "the control lost nothing: {naive}"
    );
    assert!(
        stdout.contains("hash (incident): 20 of 20 updates acknowledged (20 changes), 0 lost"),
        "{stdout}"
    );
    // The table fits a 120-column terminal, and lists no target this run did not measure.
    let widest = stdout.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(widest <= 120, "{widest} columns:\n{stdout}");
    assert!(!stdout.contains("not run"), "{stdout}");
    assert!(
        stdout.contains("p99 ms") && !stdout.contains("lock wait ms"),
        "{stdout}"
    );
}

#[test]
fn the_configured_strategy_is_the_one_compared() {
    let stdout = stdout_of(
        lab()
            .args(["compare", "--writers", "4"])
            .env("FLYRTECH_STRATEGY", "lua"),
    );
    assert!(
        stdout.contains("lua (incident): 4 of 4 updates acknowledged (4 changes), 0 lost"),
        "{stdout}"
    );
    assert!(!stdout.contains("naive ("), "{stdout}");
}

/// A one-shot tool's options come from its table in the config file, under what is typed.
#[test]
fn a_tools_table_in_the_file_sets_its_options_and_a_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flyrtech.toml");
    std::fs::write(
        &config,
        "strategy = \"hash\"\n[compare]\nwriters = 3\nscenario = \"incident\"\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = lab()
            .arg(format!("--config={}", config.display()))
            .arg("compare")
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let from_file = run(&[]);
    assert!(
        from_file.contains("hash (incident): 3 of 3 updates acknowledged (3 changes), 0 lost"),
        "{from_file}"
    );
    let typed = run(&["--writers", "2"]);
    assert!(
        typed.contains("hash (incident): 2 of 2 updates acknowledged (2 changes), 0 lost"),
        "{typed}"
    );
    std::fs::write(&config, "[compare]\nwritters = 3\n").unwrap();
    let out = lab()
        .arg(format!("--config={}", config.display()))
        .arg("compare")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("writters") && stderr.contains("[compare]"),
        "{stderr}"
    );
}

/// `--wait-aof` where it cannot hold (Redis 7.0 has no WAITAOF; the private servers keep no
/// AOF) is refused before anything runs, in one line.
#[test]
fn wait_aof_where_it_cannot_hold_is_one_clear_error() {
    let out = lab()
        .args(["--wait-aof", "1", "compare", "--strategies", "lua"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("--wait-aof needs WAITAOF") || errors[0].contains("appendonly yes"),
        "{stderr}"
    );
}

#[test]
fn a_missing_redis_server_is_one_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let out = lab()
        .args(["compare", "--strategies", "naive"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`redis-server` was not found on PATH"),
        "{stderr}"
    );
    assert!(stderr.contains("apt-get install redis-server"), "{stderr}");
    assert!(stderr.contains("REDIS_URL"), "{stderr}");
}

#[test]
fn an_unknown_strategy_lists_the_valid_ones() {
    let out = lab()
        .args(["compare", "--strategy", "fastest"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A usage error, as clap's own: exit 2, the names listed; `--help` lists them too.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let names = "naive, local-lock, optimistic, redlock, lua, hash";
    assert!(stderr.contains(names), "{stderr}");
    let help = lab().args(["compare", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(&format!("[possible values: {names}]")),
        "{help}"
    );
}

/// `flyrtech-lab soak` end to end, briefly: serve and the relay run as processes
/// of their own, the load is answered, every sample sees the processes and the stream, and the
/// chart is written. Its goals are judged by the real run (`just soak`), not here.
#[test]
fn a_short_soak_samples_serve_the_relay_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("soak.json");
    let chart = dir.path().join("soak.svg");
    let out = lab()
        .args([
            "soak",
            "--duration",
            "4s",
            "--sample-every",
            "1s",
            "--journeys",
            "40",
            "--connections",
            "4",
            "--bus-max-len",
            "1000",
            "--json",
            json.to_str().unwrap(),
            "--chart",
            chart.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0: every goal met; 1: a goal not met in so short a run. Anything else is a failure.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}\n{stderr}",
        out.status
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["failed_requests"], 0, "{report}");
    let samples = report["samples"].as_array().unwrap();
    assert!(samples.len() >= 4, "{report}");
    for sample in samples {
        assert!(sample["serve_rss_mb"].as_f64().unwrap() > 0.0, "{sample}");
        assert!(sample["relay_rss_mb"].as_f64().unwrap() > 0.0, "{sample}");
        assert!(
            sample["redis_used_memory_mb"].as_f64().unwrap() > 0.0,
            "{sample}"
        );
    }
    // The relay published what serve wrote.
    let last = samples.last().unwrap();
    assert!(last["events_stream"].as_u64().unwrap() > 0, "{last}");
    assert!(report["goals"].as_array().unwrap().len() >= 4, "{report}");
    assert!(dir.path().join("soak.png").exists());
    assert!(chart.exists());
}

/// `flyrtech-lab backlog` end to end, small: the service's relay drains the backlog as a process
/// of its own (`flyrtech relay --drain`), every entry reaches the bus in per-journey order, and
/// the relay's own count is the report's.
#[test]
fn a_backlog_is_drained_by_the_services_relay() {
    let report = report_of(&[
        "backlog",
        "--entries",
        "3000",
        "--journeys",
        "70",
        "--batch",
        "64",
    ]);
    assert_eq!(report["published"], 3000, "{report}");
    assert_eq!(report["left_in_outbox"], 0, "{report}");
    assert_eq!(report["order_kept"], true, "{report}");
    assert_eq!(report["batch"], 64, "{report}");
    // Named and missing, the service's binary is a clear error before anything is written.
    let out = lab()
        .args([
            "backlog",
            "--entries",
            "10",
            "--service-bin",
            "/nonexistent/flyrtech",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/flyrtech"), "{stderr}");
}

/// `flyrtech-lab project-bench` end to end, small: the service's relay and two projectors run
/// as processes of their own, the lag is read from what the projection recorded, and the
/// backlog's every change is projected once.
#[test]
fn project_bench_runs_the_services_relay_and_projectors() {
    let Some(nats) = flyrtech_tests::nats() else {
        return;
    };
    let Some(postgres) = flyrtech_tests::postgres() else {
        return;
    };
    let (bus, postgres) = (nats.url(), postgres.url());
    let report = report_of(&[
        "project-bench",
        "--entries",
        "2000",
        "--journeys",
        "50",
        "--lag-secs",
        "1",
        "--lag-writers",
        "4",
        "--projectors",
        "2",
        "--bus",
        &bus,
        "--postgres",
        &postgres,
    ]);
    let (lag, drain) = (&report["lag"], &report["drain"]);
    let updates = lag["updates"].as_u64().unwrap();
    assert!(updates > 0, "{report}");
    // An update that leaves a segment's status as it was makes no event: about half of them.
    let projected = lag["projected"].as_u64().unwrap();
    assert!(projected > 0 && projected <= updates, "{report}");
    assert!(lag["p50_ms"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        lag["max_ms"].as_f64().unwrap() >= lag["p99_ms"].as_f64().unwrap(),
        "{report}"
    );
    assert_eq!(drain["projected_versions"], 2000, "{report}");
}

/// `compare --audit`: the service's relay drains each run's outbox as a process of its own, and
/// the audit of what it published counts the control's lost updates as the lab does.
#[test]
fn compare_audits_what_the_services_relay_published() {
    let stdout = stdout_of(lab().args([
        "compare",
        "--strategies",
        "naive,lua",
        "--scenario",
        "incident",
        "--audit",
    ]));
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} (incident):")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("lua")
            .ends_with("0 lost; audit: 0 lost updates, 0 version gaps in 20 published changes"),
        "{stdout}"
    );
    let naive = line("naive");
    let lab_lost = naive.split(", ").nth(1).unwrap().split(';').next().unwrap();
    assert!(lab_lost != "0 lost", "{naive}");
    let audit_lost = lab_lost.replace(" lost", " lost updates");
    assert!(naive.contains(&format!("audit: {audit_lost}")), "{naive}");
}
