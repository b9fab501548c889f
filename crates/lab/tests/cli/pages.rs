//! The lab's pages as a reader opens them: `compare --html` and `verify --html` written by the
//! binary, then opened from their files in headless Chromium ([`flyrtech_tests::browser`]): no
//! console message, no request beyond the file, the elements a reader needs, a screenshot.
//! With `FLYRTECH_PAGES_DIR` set (`just pages`), the pages and their screenshots are kept
//! there (docs/results/pages).

use std::path::Path;
use std::time::Duration;

use flyrtech_infrastructure::{StoreConfig, Strategy};
use flyrtech_tests::browser::{self, Opened};
use flyrtech_tests::{TestRedis, TestServer, serve_config};

use super::*;

/// Opens `page` and checks what every page owes its reader: a silent console and no request.
/// The screenshot is kept beside the page, and in `FLYRTECH_PAGES_DIR` when set.
fn opened(chromium: &Path, page: &Path, height: u32) -> Opened {
    let shot = page.with_extension("png");
    let opened = browser::open(chromium, page, &shot, (1366, height));
    assert!(opened.console.is_empty(), "{:#?}", opened.console);
    assert!(opened.requests.is_empty(), "{:#?}", opened.requests);
    assert!(
        browser::is_png_of_at_least(&shot, 1366, height),
        "no screenshot at {}",
        shot.display()
    );
    if let Some(keep) = std::env::var_os("FLYRTECH_PAGES_DIR") {
        let keep = Path::new(&keep);
        std::fs::create_dir_all(keep).unwrap();
        for file in [page.to_owned(), shot] {
            std::fs::copy(&file, keep.join(file.file_name().unwrap())).unwrap();
        }
    }
    opened
}

/// The comparison page: a verdict row per strategy with the JSON's lost updates, one chart per
/// scenario, the targets and where it was measured.
#[test]
fn the_comparison_page_renders_offline_in_chromium() {
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (page, json) = (dir.path().join("lab.html"), dir.path().join("lab.json"));
    stdout_of(
        lab()
            .args(["compare", "--strategies", "naive,lua", "--scenario"])
            .args(["incident,spread", "--duration-secs", "1"])
            .arg(format!("--html={}", page.display()))
            .arg(format!("--json={}", json.display())),
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let dom = opened(&chromium, &page, 2600).dom;
    for strategy in ["naive", "lua"] {
        let row = row_of(
            &dom,
            &format!("<tr class=\"verdict\" data-strategy=\"{strategy}\">"),
        );
        let lost: u64 = report["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["strategy"] == strategy)
            .map(|r| r["lost"].as_u64().unwrap())
            .sum();
        let verdict = if lost == 0 {
            "no acknowledged update lost".to_owned()
        } else {
            format!("{lost} acknowledged updates lost")
        };
        assert!(row.contains(&verdict), "{strategy}: {row}");
    }
    for scenario in ["incident", "spread"] {
        let section = row_of(
            &dom,
            &format!("<section class=\"scenario\" data-scenario=\"{scenario}\">"),
        );
        assert_eq!(section.matches("<svg").count(), 1, "{scenario}: {section}");
    }
    assert!(dom.contains("<section id=\"targets\">"), "{dom}");
    assert!(
        dom.contains("flyrtech-lab compare --strategies naive,lua"),
        "{dom}"
    );
}

/// The verify page of the original read-modify-write: the verdict, and for a register no order
/// explains, its timeline with the shortest window shaded, its operations outlined and the
/// states the register could be in before it. The same page made again from the history file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verify_page_shows_the_violating_window_in_chromium() {
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let redis = TestRedis::single();
    let mut store = StoreConfig::new(Strategy::Naive);
    store.processing_delay = Duration::from_millis(5);
    let naive = TestServer::start_with(serve_config(&redis.url(), store)).await;
    let dir = tempfile::tempdir().unwrap();
    let (page, history) = (
        dir.path().join("verify-naive.html"),
        dir.path().join("naive.jsonl"),
    );
    let out = tokio::task::spawn_blocking({
        let (base, page, history) = (naive.base.clone(), page.clone(), history.clone());
        move || {
            lab()
                .args(["verify", "--target", &base, "--duration", "2s"])
                .args(["--journeys", "1", "--clients", "6"])
                .arg(format!("--html={}", page.display()))
                .arg(format!("--history={}", history.display()))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dom = opened(&chromium, &page, 1800).dom;
    assert!(dom.contains("<strong>NOT linearizable</strong>"), "{dom}");
    let violation = row_of(&dom, "<section class=\"timeline violation\"");
    assert!(violation.contains("class=\"window-band\""), "{violation}");
    assert!(violation.contains("class=\"op in-window\""), "{violation}");
    assert!(
        violation.contains("could have been: <strong>"),
        "{violation}"
    );

    // A history recorded before, or elsewhere, makes the same page.
    let again = dir.path().join("again.html");
    let checked = lab()
        .args(["verify", "--check"])
        .arg(&history)
        .arg(format!("--html={}", again.display()))
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(1));
    let dom_again = browser::open(
        &chromium,
        &again,
        &dir.path().join("again.png"),
        (1366, 900),
    )
    .dom;
    assert!(dom_again.contains("class=\"window-band\""), "{dom_again}");
}

/// A linearizable run's page: the verdict and one register's timeline as an example, and a
/// register asked for with `--show`; nothing shaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verify_page_of_a_linearizable_run_shows_an_example_timeline() {
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let redis = TestRedis::single();
    let lua = TestServer::start(&redis.url(), Strategy::Lua).await;
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("verify-lua.html");
    let out = tokio::task::spawn_blocking({
        let (base, page) = (lua.base.clone(), page.clone());
        move || {
            lab()
                .args(["verify", "--target", &base, "--duration", "2s"])
                .args(["--journeys", "1", "--clients", "6"])
                .arg(format!("--html={}", page.display()))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let dom = opened(&chromium, &page, 1400).dom;
    assert!(dom.contains("<strong>linearizable</strong>"), "{dom}");
    assert_eq!(
        dom.matches("<section class=\"timeline\"").count(),
        1,
        "{dom}"
    );
    assert!(!dom.contains("window-band"), "{dom}");
}

/// A page that loads something from a network, or logs to its console, is caught: the checks
/// above can fail.
#[test]
fn a_page_that_fetches_or_logs_is_caught() {
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fetching = dir.path().join("fetching.html");
    std::fs::write(
        &fetching,
        "<!DOCTYPE html><html><body><img src=\"http://flyrtech.invalid/chart.png\"></body></html>",
    )
    .unwrap();
    let opened = browser::open(&chromium, &fetching, &dir.path().join("f.png"), (800, 600));
    assert!(
        opened
            .requests
            .iter()
            .any(|r| r.contains("flyrtech.invalid")),
        "{opened:?}"
    );
    let logging = dir.path().join("logging.html");
    std::fs::write(
        &logging,
        format!(
            "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" \
             content=\"{}\"></head><body><script>console.log(1)</script></body></html>",
            flyrtech_lab::page::CONTENT_SECURITY_POLICY
        ),
    )
    .unwrap();
    let opened = browser::open(&chromium, &logging, &dir.path().join("l.png"), (800, 600));
    assert!(!opened.console.is_empty(), "{opened:?}");
}

/// The element that starts with `start` in `dom`, up to its closing tag's name (enough for the
/// checks above: rows and sections do not nest in themselves here).
fn row_of<'a>(dom: &'a str, start: &str) -> &'a str {
    let at = dom
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in the page:\n{dom}"));
    let tag = start
        .trim_start_matches('<')
        .split([' ', '>'])
        .next()
        .unwrap_or_default();
    let rest = &dom[at..];
    let end = rest
        .find(&format!("</{tag}>"))
        .map_or(rest.len(), |e| e + tag.len() + 3);
    &rest[..end]
}
