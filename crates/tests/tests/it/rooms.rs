//! The rooms of the infrastructure and api crates import one way (docs/ARCHITECTURE.md). Read
//! from the sources' `crate::` paths, so an arrow pointing back up fails here rather than in a
//! review. Root re-exports (`crate::Redis`) would hide an arrow, so inside a crate only room
//! paths count as imports, and a root path in a room is itself a finding.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A room and the rooms it may import.
type Rule = (&'static str, &'static [&'static str]);

const INFRASTRUCTURE: &[Rule] = &[
    ("plumbing", &[]),
    ("store", &["plumbing"]),
    ("dataset", &["plumbing", "store"]),
    ("events", &["plumbing", "store"]),
    ("local", &[]),
];

const API: &[Rule] = &[
    // config reads flags, file and environment into the settings types http owns.
    ("config", &["http"]),
    ("deployment", &[]),
    ("http", &[]),
    ("lab", &[]),
    ("commands", &["config", "deployment", "http", "lab"]),
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
        for target in crate_paths(&code(&text)) {
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
    let text = "use crate::plumbing::keys;\nuse crate::{store, events::relay};\n/// [`crate::dataset`]\nlet x = 1; // crate::local\n";
    let found = crate_paths(&code(text));
    let expected: BTreeSet<String> = ["plumbing", "store", "events"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn the_infrastructure_rooms_import_one_way() {
    let wrong = wrong_arrows("infrastructure", INFRASTRUCTURE);
    assert!(
        wrong.is_empty(),
        "arrows against docs/ARCHITECTURE.md: {wrong:#?}"
    );
}

#[test]
fn the_api_rooms_import_one_way() {
    let wrong = wrong_arrows("api", API);
    assert!(
        wrong.is_empty(),
        "arrows against docs/ARCHITECTURE.md: {wrong:#?}"
    );
}
