//! What operators plug in: the alert rules and their unit tests under `promtool`,
//! the dashboard and the rules naming only metrics the processes export, and every process'
//! `/metrics` clean under `promtool check metrics`, exporting only cataloged metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flyrtech_infrastructure::local::free_port;
use flyrtech_infrastructure::telemetry::cataloged;
use flyrtech_tests::{nats, postgres};

use super::{Serving, flyrtech, http, private_redis};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file)
}

/// `promtool`, or `None` (the test returns early, saying so) when it is not installed outside
/// CI. CI installs Debian's `prometheus` package (`.ci/run`), so there every test runs.
fn promtool() -> Option<Command> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(Command::new("promtool"));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "promtool is missing (Debian's prometheus package)"
    );
    eprintln!("SKIPPED: this test needs promtool (Debian's prometheus package)");
    None
}

/// Runs `promtool ARGS`, asserting success; its output.
fn run(mut promtool: Command, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = promtool
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The alerts `alerts.yml` defines.
fn alerts() -> BTreeSet<String> {
    std::fs::read_to_string(deploy("prometheus/alerts.yml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

/// Per alert of `alerts.test.yml`: (fires in some test, silent in some test).
fn tested() -> BTreeMap<String, (bool, bool)> {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.test.yml")).unwrap();
    let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname: ") {
            current = Some(name.to_owned());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts follows its alertname");
            let entry = seen.entry(name).or_default();
            if expected.trim() == "[]" {
                entry.1 = true;
            } else {
                entry.0 = true;
            }
        }
    }
    seen
}

/// The rules pass `promtool check rules`, their unit tests pass `promtool test rules`, the
/// example configuration passes `promtool check config`; and every alert fires in one test and
/// stays silent in another.
#[test]
fn every_alert_fires_in_one_test_and_stays_silent_in_another() {
    let tested = tested();
    for alert in alerts() {
        assert_eq!(
            tested.get(&alert),
            Some(&(true, true)),
            "{alert}: (fires, silent) in alerts.test.yml"
        );
    }
    let Some(_) = promtool() else { return };
    let rules = deploy("prometheus/alerts.yml");
    let checked = run(
        Command::new("promtool"),
        &["check", "rules", rules.to_str().unwrap()],
        None,
    );
    assert!(
        checked.contains(&format!("{} rules found", alerts().len())),
        "{checked}"
    );
    let tests = deploy("prometheus/alerts.test.yml");
    run(
        Command::new("promtool"),
        &["test", "rules", tests.to_str().unwrap()],
        None,
    );
    let config = deploy("prometheus/prometheus.yml");
    run(
        Command::new("promtool"),
        &["check", "config", config.to_str().unwrap()],
        None,
    );
}

/// The metric names a PromQL expression reads: its identifiers, without label matchers, ranges,
/// grouping clauses, functions (an identifier before `(`) and operators.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut plain = String::new();
    let mut depth = 0;
    let mut quoted = false;
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth > 0 => {}
            _ => plain.push(c),
        }
    }
    // Grouping clauses name labels: `by (le, route)`, `on ()`, `without (x)`.
    for clause in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        while let Some(at) = find_word(&plain, clause) {
            let rest = &plain[at + clause.len()..];
            let open = rest.find('(').map_or(rest.len(), |o| o);
            let close = rest[open..].find(')').map_or(rest.len(), |c| open + c + 1);
            plain.replace_range(at..at + clause.len() + close, " ");
        }
    }
    let mut names = BTreeSet::new();
    let chars: Vec<char> = plain.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let keyword = ["and", "or", "unless", "bool"].contains(&word.as_str());
            if next != Some(&'(') && !keyword {
                names.insert(word);
            }
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Where `word` stands alone in `text`.
fn find_word(text: &str, word: &str) -> Option<usize> {
    text.match_indices(word).map(|(at, _)| at).find(|&at| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        boundary(before) && boundary(after)
    })
}

/// The `expr` blocks of a rules file.
fn rule_exprs(text: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(at) = line.find("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let mut expr = line[at + "expr:".len()..]
            .trim()
            .trim_start_matches('|')
            .to_owned();
        while let Some(next) = lines.peek() {
            if next.trim().is_empty() || next.len() - next.trim_start().len() <= indent {
                break;
            }
            expr.push(' ');
            expr.push_str(next.trim());
            lines.next();
        }
        exprs.push(expr);
    }
    exprs
}

/// Every `expr` of a dashboard's JSON.
fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{route!="/metrics"}[5m]))) > 0.25
           or (sum(rate(a_total[$__rate_interval])) == 0 or absent(b_total)) and on () max(c) > 1e3"#,
    );
    let expected: BTreeSet<String> = [
        "http_request_duration_seconds_bucket",
        "a_total",
        "b_total",
        "c",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, expected);
}

/// Every metric the rules and the dashboard read is one the processes export (the catalog,
/// which the next test holds the processes to), or Prometheus' own `up`.
#[test]
fn the_rules_and_the_dashboard_read_only_exported_metrics() {
    let mut exprs = rule_exprs(&std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap());
    assert_eq!(exprs.len(), alerts().len());
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/flyrtech.json")).unwrap())
            .unwrap();
    let rules = exprs.len();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(
        exprs.len() > rules + 10,
        "the dashboard's panels have queries"
    );
    let mut read = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                name == "up" || cataloged(&name).is_some(),
                "{name} (in {expr}) is not a metric any flyrtech process exports"
            );
            read.insert(name);
        }
    }
    assert!(read.len() > 20, "{read:?}");
}

/// Scrapes `url` until its body names `family` (bounded: 30 s).
async fn scrape_until(url: &str, family: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = http().get(url).send().await
            && let Ok(body) = response.text().await
            && body.contains(&format!("# TYPE {family} "))
        {
            return body;
        }
        assert!(Instant::now() < deadline, "{url} never showed {family}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A long-running command, SIGTERMed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// serve, the relay and the projector, each at work, export `/metrics` that `promtool check
/// metrics` accepts without a finding (help texts, units, `_total` counters), and nothing that
/// is not in the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_exports_cataloged_metrics_promtool_accepts() {
    let Some(_) = promtool() else { return };
    let (Some(nats), Some(pg)) = (nats(), postgres()) else {
        return;
    };
    let (_redis, url, _) = private_redis().await;
    let serving = Serving::start_with(&["--strategy", "lua"], &[("FLYRTECH_REDIS_URL", &url)]);
    let client = http();
    for status in ["Delayed", "Departed"] {
        let put = client
            .put(serving.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
            .json(&serde_json::json!({ "status": status }))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
    }
    let missing = client
        .get(serving.url("/api/journeys/JRN-404"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let serve_metrics = scrape_until(&serving.url("/metrics"), "outbox_backlog_entries").await;

    let relay_port = free_port(false).unwrap();
    let _relay = Running(
        flyrtech()
            .args(["--redis-url", &url, "relay", "--bus", &nats.url()])
            .args(["--metrics-listen", &format!("127.0.0.1:{relay_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let relay_metrics = scrape_until(
        &format!("http://127.0.0.1:{relay_port}/metrics"),
        "outbox_published_total",
    )
    .await;
    let project_port = free_port(false).unwrap();
    let _project = Running(
        flyrtech()
            .args(["project", "--bus", &nats.url(), "--postgres", &pg.url()])
            .args(["--metrics-listen", &format!("127.0.0.1:{project_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let project_metrics = scrape_until(
        &format!("http://127.0.0.1:{project_port}/metrics"),
        "projector_lag_seconds",
    )
    .await;

    for (process, body) in [
        ("serve", &serve_metrics),
        ("relay", &relay_metrics),
        ("project", &project_metrics),
    ] {
        let findings = run(promtool().unwrap(), &["check", "metrics"], Some(body));
        assert!(
            findings.trim().is_empty(),
            "{process}: promtool check metrics:\n{findings}"
        );
        for family in body.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = family.split_whitespace().next().unwrap();
            let known = cataloged(name)
                .unwrap_or_else(|| panic!("{process} exports {name}, which is not in the catalog"));
            assert!(
                known.exported_by.contains(process),
                "{process} exports {name}; the catalog says {}",
                known.exported_by
            );
        }
    }
    let (status, log) = serving.terminate();
    assert!(status.success(), "{log}");
}

/// The runbook (docs/operations.md) has a section for every alert (its `runbook_url`) and names
/// every metric of the catalog.
#[test]
fn the_runbook_covers_every_alert_and_metric() {
    let runbook = std::fs::read_to_string(deploy("../docs/operations.md")).unwrap();
    for alert in alerts() {
        assert!(
            runbook.contains(&format!("\n### {alert}\n")),
            "docs/operations.md has no section for {alert}"
        );
    }
    for metric in flyrtech_infrastructure::telemetry::CATALOG {
        assert!(
            runbook.contains(&format!("`{}`", metric.name)),
            "docs/operations.md does not name {}",
            metric.name
        );
    }
}
