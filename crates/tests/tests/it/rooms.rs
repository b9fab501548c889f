//! The rooms of the infrastructure, api and lab crates import one way (docs/ARCHITECTURE.md). Read
//! from the sources' `crate::` paths, so an arrow pointing back up fails here rather than in a
//! review. Root re-exports (`crate::Redis`) would hide an arrow, so inside a crate only room
//! paths count as imports, and a root path in a room is itself a finding.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A room and the rooms it may import.
type Rule = (&'static str, &'static [&'static str]);

/// Every crate whose rooms are checked for circles, its root included.
const CRATES: &[&str] = &["core", "infrastructure", "cli", "api", "lab"];

const INFRASTRUCTURE: &[Rule] = &[
    // Below the store, in the order they build on each other (`keys.rs` is a room of one file).
    ("keys", &[]),
    ("telemetry", &[]),
    ("secrets", &["keys"]),
    ("connection", &["keys", "secrets", "telemetry"]),
    ("replication", &["connection", "keys", "telemetry"]),
    (
        "store",
        &["connection", "replication", "keys", "secrets", "telemetry"],
    ),
    (
        "dataset",
        &["connection", "replication", "keys", "telemetry", "store"],
    ),
    (
        "events",
        &[
            "connection",
            "replication",
            "keys",
            "secrets",
            "telemetry",
            "store",
        ],
    ),
    ("projection", &["connection", "keys", "telemetry", "events"]),
    ("local", &[]),
];

const API: &[Rule] = &[
    // http is built from serve's settings (flyrtech-cli's config), as zero-to-production's
    // startup imports its configuration.
    ("http", &[]),
    ("telemetry", &[]),
    ("commands", &["http", "telemetry"]),
];

const CLI: &[Rule] = &[
    // config makes each command's one settings type.
    ("config", &["deployment"]),
    ("deployment", &[]),
    ("output", &[]),
    ("command", &["config", "deployment", "output"]),
];

const LAB: &[Rule] = &[
    // The checker is pure; the comparison and the verify client record what it judges.
    ("history", &[]),
    // The service's processes, which the comparison (`--audit`) and the commands start.
    ("process", &[]),
    // The pages' frame (styles, policy, figures), under both reports.
    ("page", &[]),
    ("compare", &["process", "page"]),
    ("verify", &["history"]),
    (
        "commands",
        &["compare", "verify", "history", "process", "page"],
    ),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (line comments and doc comments: a doc link names a
/// module without importing it).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every first segment after `crate::`, a `crate::{a, b::c}` group giving each of its members.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for member in group.split(',') {
                let name: String = member
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

/// The rooms of the files `text` (the source at `file`) borrows with `include_str!`, when they are
/// inside `src`.
fn included(src: &Path, file: &Path, text: &str) -> BTreeSet<String> {
    let mut rooms = BTreeSet::new();
    for (at, _) in text.match_indices("include_str!(\"") {
        let rest = &text[at + "include_str!(\"".len()..];
        let Some(end) = rest.find('"') else { continue };
        let target = file.parent().unwrap().join(&rest[..end]);
        let Ok(resolved) = normalise(&target).strip_prefix(src).map(Path::to_path_buf) else {
            continue;
        };
        if let Some(first) = resolved.components().next() {
            rooms.insert(
                first
                    .as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_owned(),
            );
        }
    }
    rooms
}

/// `path` with its `..` steps taken (no file system access).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Every arrow that breaks `rules`, as `room -> target (file)`.
fn wrong_arrows(crate_dir: &str, rules: &[Rule]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let rooms: BTreeSet<&str> = rules.iter().map(|(room, _)| *room).collect();
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let room = first.trim_end_matches(".rs").to_owned();
        let Some((_, allowed)) = rules.iter().find(|(name, _)| *name == room) else {
            // lib.rs and main.rs sit above every room.
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let mut targets = crate_paths(&code(&text));
        // A file borrowed with include_str! from another room is an arrow to that room.
        targets.extend(included(&src, &file, &text));
        for target in targets {
            let fine = target == room
                || target == "self"
                || (rooms.contains(target.as_str()) && allowed.contains(&target.as_str()));
            if !fine {
                wrong.push(format!("{room} -> {target} ({})", relative.display()));
            }
        }
    }
    wrong
}

#[test]
fn the_path_reader_sees_single_paths_groups_and_skips_comments() {
    let text = "use crate::keys;\nuse crate::{store, events::relay};\n/// [`crate::dataset`]\nlet x = 1; // crate::local\n";
    let found = crate_paths(&code(text));
    let expected: BTreeSet<String> = ["keys", "store", "events"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(found, expected);
}

/// The modules of one room (`store/document.rs` is `document`, `store/strategy/*` is `strategy`)
/// and the modules each imports (`crate::store::X`, and `super::X` from a file directly in the
/// room). The room `""` is the crate's root: its modules are the files and folders beside
/// `lib.rs`, and an arrow is a `crate::X`.
fn module_arrows(
    crate_dir: &str,
    room: &str,
) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let root = src.join(room);
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut arrows = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    let prefix = if room.is_empty() {
        "crate::".to_owned()
    } else {
        format!("crate::{room}::")
    };
    for file in files {
        let relative = file.strip_prefix(&root).unwrap();
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts == ["mod.rs"] || parts == ["lib.rs"] || parts == ["main.rs"] {
            // The room's root declares its modules.
            continue;
        }
        let module = parts[0].trim_end_matches(".rs").to_owned();
        let text = code(&std::fs::read_to_string(&file).unwrap());
        let mut targets = BTreeSet::new();
        let mut add = |rest: &str| {
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for member in group.split(',') {
                    targets.insert(ident(member.trim()));
                }
            } else {
                targets.insert(ident(rest));
            }
        };
        for (at, _) in text.match_indices(&prefix) {
            add(&text[at + prefix.len()..]);
        }
        if parts.len() == 1 && !room.is_empty() {
            for (at, _) in text.match_indices("super::") {
                add(&text[at + "super::".len()..]);
            }
        }
        targets.retain(|t| !t.is_empty() && *t != module && t != "self");
        arrows.entry(module).or_default().extend(targets);
    }
    arrows
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// A circle among `arrows`, as the modules along it, if there is one.
fn circle(arrows: &std::collections::BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        arrows: &std::collections::BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in arrows.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, arrows, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    arrows
        .keys()
        .find_map(|node| visit(node, arrows, &mut Vec::new(), &mut done))
}

#[test]
fn the_circle_finder_finds_one_and_only_one() {
    let arrows = |pairs: &[(&str, &str)]| {
        let mut map = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
        for (from, to) in pairs {
            map.entry((*from).to_owned())
                .or_default()
                .insert((*to).to_owned());
        }
        map
    };
    assert_eq!(circle(&arrows(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(
        circle(&arrows(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

/// Every room of every crate, its root included (`""`): the folders under `src/`.
fn rooms_of(crate_dir: &str) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let mut rooms = vec![String::new()];
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rooms.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    rooms.sort();
    rooms
}

#[test]
fn no_room_has_a_circle_inside() {
    let mut checked = 0;
    for crate_dir in CRATES {
        for room in rooms_of(crate_dir) {
            let arrows = module_arrows(crate_dir, &room);
            assert_eq!(circle(&arrows), None, "{crate_dir}/{room}: {arrows:#?}");
            checked += 1;
        }
    }
    // The crate roots and at least the infrastructure's rooms were read.
    assert!(
        checked > CRATES.len() + 5,
        "only {checked} rooms were found"
    );
}

/// A circle through the crate root is seen: the arrows of core's root include the ones that
/// would close one (`journey` imports `events`, and `events` the version, not the journey).
#[test]
fn the_crate_root_is_a_room_too() {
    let arrows = module_arrows("core", "");
    assert!(arrows["journey"].contains("events"), "{arrows:#?}");
    assert!(arrows["events"].contains("version"), "{arrows:#?}");
    assert!(!arrows["events"].contains("journey"), "{arrows:#?}");
}

/// The names of a crate's normal dependencies (its `[dependencies]` table).
fn dependencies(crate_dir: &str) -> BTreeSet<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(manifest).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    manifest
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .map(|deps| deps.keys().cloned().collect())
        .unwrap_or_default()
}

/// Each binary carries only its own: the service none of the lab's dependencies, the lab none of
/// the service's, and what both share (cli, infrastructure, core) neither. Read from the
/// manifests, so that a dependency added to the wrong crate fails here.
#[test]
fn each_binary_carries_only_its_own_dependencies() {
    const LAB_ONLY: &[&str] = &["plotters", "hdrhistogram", "indicatif", "comfy-table"];
    const SERVICE_ONLY: &[&str] = &[
        "flyrtech-api",
        "axum",
        "opentelemetry-otlp",
        "utoipa-swagger-ui",
        "governor",
    ];
    for (crate_dir, forbidden) in [
        ("api", LAB_ONLY),
        ("lab", SERVICE_ONLY),
        ("cli", LAB_ONLY),
        ("cli", SERVICE_ONLY),
        ("infrastructure", LAB_ONLY),
        ("infrastructure", SERVICE_ONLY),
        ("core", LAB_ONLY),
        ("core", SERVICE_ONLY),
    ] {
        let deps = dependencies(crate_dir);
        assert!(deps.contains("serde"), "{crate_dir}: {deps:?}");
        let wrong: Vec<_> = forbidden.iter().filter(|d| deps.contains(**d)).collect();
        assert!(wrong.is_empty(), "{crate_dir} depends on {wrong:?}");
    }
    // The lab's own are where they belong.
    assert!(dependencies("lab").contains("plotters"));
    assert!(dependencies("api").contains("axum"));
}

/// Every crate's rooms import one way (docs/ARCHITECTURE.md).
#[test]
fn every_crates_rooms_import_one_way() {
    for (crate_dir, rules) in [
        ("infrastructure", INFRASTRUCTURE),
        ("cli", CLI),
        ("api", API),
        ("lab", LAB),
    ] {
        let wrong = wrong_arrows(crate_dir, rules);
        assert!(
            wrong.is_empty(),
            "{crate_dir}: arrows against docs/ARCHITECTURE.md: {wrong:#?}"
        );
    }
}
