//! The deployment files name only what the binary has: every flag, every `FLYRTECH_*`
//! variable and every config-file key that the Kubernetes manifests (deploy/kubernetes) and the
//! compose stack (deploy/compose, where present) pass to `flyrtech` is one of its options, read
//! from the binary's own `--help`. And the image (deploy/container) builds, runs as its
//! unprivileged user on a read-only root file system, and reports healthy once `serve` answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flyrtech_tests::docker::{self, docker};

use super::flyrtech;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The YAML files of deploy/kubernetes and deploy/compose.
fn deployment_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["kubernetes", "compose"] {
        let Ok(entries) = std::fs::read_dir(deploy().join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// What `flyrtech COMMAND --help` prints (its own options and the shared ones).
struct Help(BTreeMap<String, String>);

impl Help {
    fn new() -> Self {
        Self(BTreeMap::new())
    }

    fn of(&mut self, command: &str) -> &str {
        self.0
            .entry(command.to_owned())
            .or_insert_with(|| flyrtech_tests::stdout_of(flyrtech().args([command, "--help"])))
    }

    fn has_flag(&mut self, command: &str, flag: &str) -> bool {
        let help = self.of(command);
        help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n"))
    }

    fn has_variable(&mut self, command: &str, variable: &str) -> bool {
        self.of(command).contains(&format!("[env: {variable}="))
    }
}

/// The commands of `flyrtech` a deployment runs.
const COMMANDS: [&str; 3] = ["serve", "relay", "project"];

/// Every option `text` (one YAML file) passes that `flyrtech` does not have, as
/// `file: what`. A document's command is the first of [`COMMANDS`] in its `args`/`command`
/// lists; its flags, its `FLYRTECH_*` variables and the keys of an embedded `flyrtech.toml`
/// are looked up in that command's help.
fn unknown_options(name: &str, text: &str, help: &mut Help) -> Vec<String> {
    let mut unknown = Vec::new();
    for document in blocks(text) {
        let document = document.as_str();
        let lines: Vec<&str> = document
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        // A service of the compose file or a Deployment's pod: one command each. Its flags are
        // checked when it runs `flyrtech` (a server's own are not ours).
        let words = command_words(&lines);
        let ours = words.iter().find(|w| COMMANDS.contains(&w.as_str()));
        let command = ours.map_or("serve", String::as_str);
        for word in words.iter().filter(|_| ours.is_some()) {
            let flag = word.split('=').next().unwrap_or(word);
            if flag.starts_with("--") && !help.has_flag(command, flag) {
                unknown.push(format!("{name}: {command} has no {flag}"));
            }
        }
        for variable in variables(document) {
            if !help.has_variable(command, &variable) {
                unknown.push(format!("{name}: {command} reads no {variable}"));
            }
        }
        if let Some(toml) = embedded_config(&lines) {
            let table: toml::Table = toml
                .parse()
                .unwrap_or_else(|e| panic!("{name}: flyrtech.toml: {e}"));
            for (key, value) in &table {
                if let toml::Value::Table(keys) = value {
                    for option in keys.keys() {
                        let option_flag = flag(option);
                        if !COMMANDS.contains(&key.as_str()) || !help.has_flag(key, &option_flag) {
                            unknown.push(format!("{name}: [{key}] has no {option}"));
                        } else if COMMANDS.iter().all(|c| help.has_flag(c, &option_flag)) {
                            unknown.push(format!("{name}: [{key}] holds the shared {option}"));
                        }
                    }
                } else if !COMMANDS.iter().all(|c| help.has_flag(c, &flag(key))) {
                    // The file's top holds the options every command shares.
                    unknown.push(format!("{name}: {key} is no shared option"));
                }
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    unknown
}

/// The parts of a YAML file that each configure one process: its documents (`---`), and in
/// them each key indented by two (a compose service; a Deployment's `template`, a ConfigMap's
/// file).
fn blocks(text: &str) -> Vec<String> {
    let mut blocks = vec![String::new()];
    for line in text.lines() {
        let key = line.len() > 2
            && line.starts_with("  ")
            && !line[2..].starts_with([' ', '-', '#'])
            && line.trim_end().ends_with(':');
        if line.starts_with("---") || key {
            blocks.push(String::new());
        }
        let last = blocks.last_mut().expect("one block at least");
        last.push_str(line);
        last.push('\n');
    }
    blocks
}

/// The words of the `args:`, `command:` and `entrypoint:` lists among `lines` (JSON-style
/// lists, on one line or several).
fn command_words(lines: &[&str]) -> Vec<String> {
    let mut words = Vec::new();
    let mut open: Option<String> = None;
    for line in lines {
        let text = line.trim_start().trim_start_matches("- ");
        let list = match open.take() {
            Some(mut list) => {
                list.push_str(text);
                list
            }
            None => match ["args:", "command:", "entrypoint:"]
                .iter()
                .find_map(|key| text.strip_prefix(key))
                .map(str::trim)
            {
                Some(rest) if rest.starts_with('[') => rest.to_owned(),
                _ => continue,
            },
        };
        match serde_json::from_str::<Vec<String>>(&list) {
            Ok(list) => words.extend(list),
            Err(_) if !list.trim_end().ends_with(']') => open = Some(list),
            Err(e) => panic!("not a list of strings ({e}): {list}"),
        }
    }
    words
}

/// The flag of a config-file key.
fn flag(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// The `FLYRTECH_*` names in `text` that a process reads.
fn variables(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("FLYRTECH_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        // `${FLYRTECH_IMAGE}` is compose's own substitution, not a variable of the binary.
        let substituted = rest[..at].ends_with("${");
        rest = &rest[at + name.len()..];
        if !substituted {
            found.push(name);
        }
    }
    found
}

/// The text of a `flyrtech.toml: |` block among `lines`, dedented.
fn embedded_config(lines: &[&str]) -> Option<String> {
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with("flyrtech.toml: |"))?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let outer = indent(lines[start]);
    let body: Vec<&str> = lines[start + 1..]
        .iter()
        .copied()
        .take_while(|l| l.trim().is_empty() || indent(l) > outer)
        .collect();
    let inner = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent(l))
        .min()?;
    Some(
        body.iter()
            .map(|l| l.get(inner..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[test]
fn the_deployment_files_name_only_options_the_binary_has() {
    let files = deployment_files();
    assert!(files.len() >= 5, "{files:?}");
    let mut help = Help::new();
    let mut unknown = Vec::new();
    let mut checked = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        checked += variables(&text).len();
        let name = path.file_name().unwrap().to_string_lossy();
        unknown.extend(unknown_options(&name, &text, &mut help));
    }
    assert!(checked > 0, "no FLYRTECH_ variable found in {files:?}");
    assert!(unknown.is_empty(), "{unknown:#?}");
}

/// The check finds what a deployment file could get wrong: a flag, a variable, a key of a
/// command's table, a command's key at the file's top.
#[test]
fn an_option_the_binary_lacks_is_caught() {
    let manifest = r#"
kind: Deployment
spec:
  containers:
    - args: ["relay", "--batch", "8", "--no-such-flag=1"]
      env:
        - name: FLYRTECH_NO_SUCH_VARIABLE
        - name: FLYRTECH_CONFIG
---
kind: ConfigMap
data:
  flyrtech.toml: |
    strategy = "lua"
    listen = "0.0.0.0:8080"
    [relay]
    bus = "nats://nats:4222"
    batch_size = 3
    [serve]
    wait_replicas = 1
"#;
    let compose = r#"
services:
  redis-1:
    command: ["--port", "6379",
              "--appendonly", "yes"]
  relay:
    command: ["relay", "--bus", "nats://nats-1:4222",
              "--bus-replicaz", "3"]
    environment:
      FLYRTECH_REDIS_URL: redis://redis-1:6379
"#;
    assert_eq!(
        unknown_options("c.yml", compose, &mut Help::new()),
        ["c.yml: relay has no --bus-replicaz"]
    );
    let found = unknown_options("m.yaml", manifest, &mut Help::new());
    assert_eq!(
        found,
        [
            "m.yaml: [relay] has no batch_size",
            "m.yaml: [serve] holds the shared wait_replicas",
            "m.yaml: listen is no shared option",
            "m.yaml: relay has no --no-such-flag",
            "m.yaml: relay reads no FLYRTECH_NO_SUCH_VARIABLE",
        ]
    );
}

/// The image deploy/container/build.sh makes (with this suite's `flyrtech`, on the base it
/// makes from Debian's packages where none can be pulled) runs as its unprivileged user on a
/// read-only root file system, and Docker reports `serve` in it healthy through the image's own
/// health check; the API answers from outside the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_unprivileged_on_a_read_only_root_and_reports_healthy() {
    if !docker::answers() {
        return;
    }
    let tag = format!("flyrtech:test-{}", std::process::id());
    let _image = docker::image(&tag, Path::new(env!("CARGO_BIN_EXE_flyrtech")));

    let id = docker::run(docker().args(["run", "--rm", "--read-only", "--entrypoint", "id", &tag]));
    assert!(
        id.starts_with("uid=10001(flyrtech) gid=10001(flyrtech)"),
        "{id}"
    );

    let redis = flyrtech_infrastructure::LocalRedis::standalone().unwrap();
    let port = flyrtech_infrastructure::local::free_port(false).unwrap();
    let name = format!("flyrtech-test-serve-{}", std::process::id());
    docker::run(docker().args([
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        "host",
        "--read-only",
        "--env",
        &format!("FLYRTECH_REDIS_URL={}", redis.url()),
        "--env",
        &format!("FLYRTECH_LISTEN=127.0.0.1:{port}"),
        &tag,
    ]));
    let _container = docker::Made::new("rm", &name);
    let health = || {
        let out = docker()
            .args(["inspect", "--format", "{{.State.Health.Status}}", &name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let logs = || {
        let out = docker().args(["logs", &name]).output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while health() != "healthy" {
        assert!(
            std::time::Instant::now() < deadline,
            "never healthy ({}):\n{}",
            health(),
            logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let journey = super::http()
        .get(format!("http://127.0.0.1:{port}/api/journeys/JRN-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(journey.status(), 200, "{}", logs());
}

/// The compose stack's `grafana` profile, resolved by docker-compose itself: Grafana's
/// provisioning is the repository's, its data source is the stack's Prometheus service at the
/// address Prometheus listens on, and the dashboard it loads is deploy/grafana/flyrtech.json,
/// whose data source variable picks a Prometheus. Without the profile, compose starts no Grafana
/// (CI cannot pull its public image).
#[test]
fn the_grafana_profile_provisions_the_stacks_prometheus_and_its_dashboard() {
    if !docker::answers() {
        return;
    }
    let file = deploy().join("compose/docker-compose.yml");
    let config = docker::run(
        std::process::Command::new("docker-compose")
            .arg("--file")
            .arg(&file)
            .args(["--profile", "grafana", "config"]),
    );
    let grafana = deploy().join("grafana").canonicalize().unwrap();
    for mount in [
        format!(
            "{}/provisioning:/etc/grafana/provisioning:ro",
            grafana.display()
        ),
        format!(
            "{}/flyrtech.json:/var/lib/grafana/dashboards/flyrtech.json:ro",
            grafana.display()
        ),
    ] {
        assert!(config.contains(&mount), "{mount} not in:\n{config}");
    }
    assert!(
        config.contains("--web.listen-address=0.0.0.0:9090"),
        "{config}"
    );
    assert!(config.contains("\n  prometheus:\n"), "{config}");
    let datasource =
        std::fs::read_to_string(grafana.join("provisioning/datasources/prometheus.yml")).unwrap();
    assert!(
        datasource.contains("type: prometheus")
            && datasource.contains("url: http://prometheus:9090"),
        "{datasource}"
    );
    let provider =
        std::fs::read_to_string(grafana.join("provisioning/dashboards/flyrtech.yml")).unwrap();
    assert!(
        provider.contains("path: /var/lib/grafana/dashboards"),
        "{provider}"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(grafana.join("flyrtech.json")).unwrap())
            .unwrap();
    assert_eq!(dashboard["templating"]["list"][0]["query"], "prometheus");
    // Off by default: compose lists it only under its profile.
    assert!(config.contains("profiles:\n    - grafana\n"), "{config}");
}
