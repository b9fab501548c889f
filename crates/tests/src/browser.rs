//! A real browser for the lab's pages: Debian's headless Chromium opens a page from its file
//! and reports what a reader would meet: the DOM after loading, every console message (a script
//! error, a load the page's Content-Security-Policy refused), every request that left the
//! browser, and a screenshot.
//!
//! Every request goes to a proxy of the test's own on loopback, which records it and answers
//! nothing, so that no traffic leaves the machine, the browser's own background calls
//! included (updates, sign-in, time). Those go to Google's hosts and are told apart from the
//! page's: any other request is the page's. Without Chromium, a developer's machine skips
//! (the test says so); under CI (`CI` set) its absence fails the test: `.ci/run` installs it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Hosts Chromium calls by itself (component updates, sign-in, network time, safe browsing).
const BROWSER_OWN: [&str; 5] = [
    "google.com",
    "googleapis.com",
    "gvt1.com",
    "gstatic.com",
    "googleusercontent.com",
];

/// The Chromium binary, or `None` (with a note) on a developer's machine without one.
pub fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| PathBuf::from(name))
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the browser tests: no chromium (apt-get install chromium)"
        );
        eprintln!("SKIPPED: this test needs chromium (Debian: apt-get install chromium)");
    }
    found
}

/// What the browser met on a page.
#[derive(Debug)]
pub struct Opened {
    /// The DOM once the page loaded, serialized.
    pub dom: String,
    /// Console messages (errors, refused loads), `[level] text` each.
    pub console: Vec<String>,
    /// Requests the page made that left the browser: `METHOD URL` each.
    pub requests: Vec<String>,
}

/// Opens `page` (a file) in headless `chromium`, `width` pixels wide, and writes a screenshot
/// of its first `height` pixels to `screenshot`.
///
/// # Panics
/// When the browser cannot be run or fails.
pub fn open(
    chromium: &Path,
    page: &Path,
    screenshot: &Path,
    (width, height): (u32, u32),
) -> Opened {
    let proxy = Sink::start();
    let profile = tempfile::tempdir().expect("a profile directory");
    let url = format!(
        "file://{}",
        page.canonicalize().expect("the page exists").display()
    );
    let run = |what: &[String]| {
        let out = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-extensions",
                "--disable-sync",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--proxy-server=http://127.0.0.1:{}", proxy.port))
            // Loopback through the proxy too: nothing reaches a server but the sink.
            .arg("--proxy-bypass-list=<-loopback>")
            .arg(format!("--window-size={width},{height}"))
            .args(what)
            .arg(&url)
            .output()
            .expect("chromium runs");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let dumped = run(&["--dump-dom".to_owned()]);
    let shot = run(&[format!("--screenshot={}", screenshot.display())]);
    let console = [&dumped.stderr, &shot.stderr]
        .into_iter()
        .flat_map(|err| {
            String::from_utf8_lossy(err)
                .lines()
                .filter(|l| l.contains(":CONSOLE"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    Opened {
        dom: String::from_utf8_lossy(&dumped.stdout).into_owned(),
        console,
        requests: proxy.page_requests(),
    }
}

/// A proxy that records the first line of every request and answers nothing.
struct Sink {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("an address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        // Ends with the test process; it holds nothing but the listener.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).is_ok() && !line.is_empty() {
                    recorded
                        .lock()
                        .expect("the sink's list")
                        .push(line.trim().to_owned());
                }
            }
        });
        Self { port, seen }
    }

    /// The recorded requests but the browser's own (to [`BROWSER_OWN`]).
    fn page_requests(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("the sink's list")
            .iter()
            .filter(|line| {
                let target = line.split_whitespace().nth(1).unwrap_or_default();
                let host = target
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .split(['/', ':'])
                    .next()
                    .unwrap_or_default();
                !BROWSER_OWN
                    .iter()
                    .any(|own| host == *own || host.ends_with(&format!(".{own}")))
            })
            .cloned()
            .collect()
    }
}

/// Whether `file` is a PNG of at least `width` × `height` pixels (its IHDR).
pub fn is_png_of_at_least(file: &Path, width: u32, height: u32) -> bool {
    let Ok(bytes) = std::fs::read(file) else {
        return false;
    };
    let be = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_be_bytes)
    };
    bytes.starts_with(b"\x89PNG\r\n\x1a\n") && be(16) >= width && be(20) >= height
}
