//! Docker for the tests that build the image and run the compose stack: the engine asked, and
//! what a test made removed however the test ends.

use std::process::{Command, Stdio};

/// `docker`.
pub fn docker() -> Command {
    Command::new("docker")
}

/// Whether a Docker engine answers. Outside CI its absence skips the test (it says so); CI has
/// one, and there its absence fails the test.
pub fn answers() -> bool {
    let answers = docker()
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !answers {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the container tests: no Docker engine answers"
        );
        eprintln!("SKIPPED: this test needs a Docker engine");
    }
    answers
}

/// Runs `command`, asserting success with its output shown; its stdout.
pub fn run(command: &mut Command) -> String {
    let out = command.output().expect("runs");
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the service's image `tag` with deploy/container/build.sh from `binary` (the suite's
/// own `flyrtech`), on the base it makes from Debian's packages where none can be pulled. The
/// image is removed when the answer is dropped.
pub fn image(tag: &str, binary: &std::path::Path) -> Made {
    let made = Made::new("rmi", tag);
    run(Command::new(repository().join("deploy/container/build.sh"))
        .arg(tag)
        .env("BINARY", binary));
    made
}

/// The repository's root.
pub fn repository() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Something of Docker's a test made (`docker KIND --force NAME` removes it), removed when
/// dropped.
#[derive(Debug)]
pub struct Made {
    remove: &'static str,
    name: String,
}

impl Made {
    /// `name`, removed by `docker REMOVE --force NAME` (`rm`, `rmi`).
    pub fn new(remove: &'static str, name: &str) -> Self {
        Self {
            remove,
            name: name.to_owned(),
        }
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = docker()
            .args([self.remove, "--force", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The compose stack of deploy/compose as an operator brings it up, under a project of its
/// own with its published ports on free host ports, the service's image built from `binary`.
/// Taken down with its volumes and network when dropped (the servers' image and the base stay:
/// they are caches, made once).
#[derive(Debug)]
pub struct Stack {
    project: String,
    image: String,
    /// The host ports of `serve-1` and `serve-2`.
    pub serve: [u16; 2],
    /// Prometheus' host port.
    pub prometheus: u16,
    base: String,
    /// The alert rules Prometheus loads: deploy/prometheus/alerts.yml on a faster clock.
    rules: tempfile::TempDir,
    _image: Made,
}

impl Stack {
    /// Builds the images and brings the stack up (`docker-compose build`, `up --detach`).
    pub fn up(binary: &std::path::Path) -> Self {
        let project = format!("flyrtechtest{}", std::process::id());
        let tag = format!("flyrtech:{project}");
        let made = image(&tag, binary);
        let port = || flyrtech_infrastructure::local::free_port(false).expect("a free port");
        // build.sh used the public base when present, else made this one.
        let public = docker()
            .args(["image", "inspect", "debian:bookworm-slim"])
            .output()
            .is_ok_and(|o| o.status.success());
        let base = if public {
            "debian:bookworm-slim"
        } else {
            "flyrtech/debian:bookworm"
        };
        let rules = tempfile::tempdir().expect("a temporary directory");
        let deployed = std::fs::read_to_string(repository().join("deploy/prometheus/alerts.yml"))
            .expect("the alert rules");
        std::fs::write(
            rules.path().join("alerts.yml"),
            faster_rules(&deployed, RULES_CLOCK),
        )
        .expect("written");
        // Readable by Prometheus whatever user its container runs as.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(rules.path(), std::fs::Permissions::from_mode(0o755))
            .expect("permissions set");
        let stack = Self {
            project,
            image: tag,
            serve: [port(), port()],
            prometheus: port(),
            base: base.to_owned(),
            rules,
            _image: made,
        };
        run(stack.compose().args(["build", "--quiet"]));
        run(stack.compose().args(["up", "--detach"]));
        stack
    }

    /// `docker-compose` on the stack's file and project.
    pub fn compose(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("--file")
            .arg(repository().join("deploy/compose/docker-compose.yml"))
            .args(["--project-name", &self.project])
            .env("FLYRTECH_IMAGE", &self.image)
            .env("BASE", &self.base)
            .env("SERVE_1_PORT", self.serve[0].to_string())
            .env("SERVE_2_PORT", self.serve[1].to_string())
            .env("PROMETHEUS_PORT", self.prometheus.to_string())
            .env("PROMETHEUS_RULES", self.rules.path().join("alerts.yml"));
        cmd
    }

    /// The container of `service`.
    pub fn container(&self, service: &str) -> String {
        run(self.compose().args(["ps", "--quiet", service]))
            .trim()
            .to_owned()
    }

    /// `service`'s address on the stack's network (which this host reaches).
    pub fn ip(&self, service: &str) -> String {
        let format = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}";
        run(docker().args(["inspect", "--format", format, &self.container(service)]))
            .trim()
            .to_owned()
    }

    /// Docker's health of `service`'s container (`healthy`, `starting`, …).
    pub fn health(&self, service: &str) -> String {
        let format = "{{.State.Health.Status}}";
        run(docker().args(["inspect", "--format", format, &self.container(service)]))
            .trim()
            .to_owned()
    }

    /// The stack's API key (admin), as its `keys` service made it.
    pub fn api_key(&self) -> String {
        let volume = format!("{}_secrets:/secrets:ro", self.project);
        run(docker().args([
            "run",
            "--rm",
            "--volume",
            &volume,
            "--entrypoint",
            "cat",
            &self.image,
            "/secrets/token",
        ]))
        .trim()
        .to_owned()
    }

    /// `docker ACTION` on `service`'s container: `kill` (SIGKILL, a lost host), `start`,
    /// `stop` (its stop signal, SIGKILL after 5 s), `restart` (stopped, then started again).
    pub fn act(&self, action: &str, service: &str) {
        let container = self.container(service);
        let mut cmd = docker();
        cmd.arg(action);
        if action == "restart" || action == "stop" {
            cmd.args(["--time", "5"]);
        }
        run(cmd.arg(&container));
    }

    /// Cuts `service` from the stack's network (`docker network disconnect`): its peers' packets
    /// go unanswered, as when a host drops off the network, and nothing resets its connections.
    pub fn cut(&self, service: &str) {
        run(docker().args([
            "network",
            "disconnect",
            &self.network(),
            &self.container(service),
        ]));
    }

    /// Connects `service` to the stack's network again, under its service name (which
    /// `docker network connect` would not give it back by itself).
    pub fn heal(&self, service: &str) {
        run(docker().args([
            "network",
            "connect",
            "--alias",
            service,
            &self.network(),
            &self.container(service),
        ]));
    }

    /// The stack's network, as compose names it.
    fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    /// `command` run in `service`'s container; its stdout.
    pub fn exec(&self, service: &str, command: &[&str]) -> String {
        run(docker()
            .arg("exec")
            .arg(self.container(service))
            .args(command))
    }

    /// The Redis node (`redis-1` … `redis-6`) that is a primary and holds a key matching
    /// `pattern`.
    pub fn redis_primary_holding(&self, pattern: &str) -> String {
        (1..=6)
            .map(|n| format!("redis-{n}"))
            .find(|node| {
                let role = self.exec(node, &["redis-cli", "role"]);
                let keys = self.exec(node, &["redis-cli", "--scan", "--pattern", pattern]);
                role.starts_with("master") && !keys.trim().is_empty()
            })
            .unwrap_or_else(|| panic!("no primary holds a key matching {pattern}"))
    }

    /// The series Prometheus answers to the instant query `promql`; `None` when it does not
    /// answer.
    pub async fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>> {
        let api = format!("http://127.0.0.1:{}/api/v1/query", self.prometheus);
        let url = reqwest::Url::parse_with_params(&api, [("query", promql)]).expect("a URL");
        let answer: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
        answer["data"]["result"].as_array().cloned()
    }

    /// Whether Prometheus says the alert `name` (its series narrowed by `labels`, PromQL
    /// matchers such as `instance="serve-1:8080"`) is in `state` now: `firing`, or `pending`
    /// and `firing` alike for an empty `state`. `None` when Prometheus does not answer.
    pub async fn alert(&self, name: &str, labels: &str, state: &str) -> Option<bool> {
        let state = if state.is_empty() {
            String::new()
        } else {
            format!(r#",alertstate="{state}""#)
        };
        let promql = format!(r#"ALERTS{{{}{state}}}"#, matchers(name, labels));
        self.query(&promql).await.map(|series| !series.is_empty())
    }

    /// Whether the alert `name` (narrowed by `labels`) fired within the last 15 minutes, by
    /// Prometheus' own `ALERTS` series; `None` when Prometheus does not answer.
    pub async fn fired(&self, name: &str, labels: &str) -> Option<bool> {
        let promql = format!(
            r#"max_over_time(ALERTS{{{},alertstate="firing"}}[15m])"#,
            matchers(name, labels)
        );
        self.query(&promql).await.map(|series| !series.is_empty())
    }

    /// The last lines of every service's log.
    pub fn logs(&self) -> String {
        let out = self
            .compose()
            .args(["logs", "--no-color", "--tail", "20"])
            .output()
            .expect("runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self
            .compose()
            .args(["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The PromQL matchers of the alert `name`'s series, narrowed by `labels` (matchers, or empty).
fn matchers(name: &str, labels: &str) -> String {
    if labels.is_empty() {
        format!(r#"alertname="{name}""#)
    } else {
        format!(r#"alertname="{name}",{labels}"#)
    }
}

/// How many times faster than deployed the stack's Prometheus evaluates the alert rules.
pub const RULES_CLOCK: u32 = 6;

/// Prometheus rules on a clock `factor` times faster: every `for:` and every range vector in
/// minutes (`[5m]`) divided by `factor`, in seconds; the expressions otherwise as written. A
/// `for: 2m` alert then fires after 20 s of its condition, and a `[5m]` rate forgets a fault
/// in 50 s, so a test can see an alert fire and resolve in a minute. The deployed durations
/// are promtool's to test (deploy/prometheus/alerts.test.yml).
pub fn faster_rules(rules: &str, factor: u32) -> String {
    let faster = |minutes: &str| {
        minutes
            .strip_suffix('m')
            .and_then(|m| m.parse::<u32>().ok())
            .map(|m| format!("{}s", m * 60 / factor))
    };
    let mut out = String::with_capacity(rules.len());
    for line in rules.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        if let Some(duration) = line.trim_start().strip_prefix("for: ").and_then(faster) {
            out.push_str(&format!("{indent}for: {duration}\n"));
            continue;
        }
        let mut rest = line;
        while let Some(open) = rest.find('[') {
            out.push_str(&rest[..=open]);
            rest = &rest[open + 1..];
            if let Some(close) = rest.find(']')
                && let Some(range) = faster(&rest[..close])
            {
                out.push_str(&range);
                rest = &rest[close..];
            }
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::faster_rules;

    #[test]
    fn the_rules_clock_divides_every_for_and_range_in_minutes() {
        let rules = "      - alert: A\n        expr: |\n          sum(rate(x[5m])) / sum(rate(y[15m])) > 0.01 or up[1m] == 0\n        for: 2m\n        labels:\n          severity: page\n";
        assert_eq!(
            faster_rules(rules, 6),
            "      - alert: A\n        expr: |\n          sum(rate(x[50s])) / sum(rate(y[150s])) > 0.01 or up[10s] == 0\n        for: 20s\n        labels:\n          severity: page\n"
        );
    }
}
