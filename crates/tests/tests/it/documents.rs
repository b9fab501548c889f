//! The documents against what they cite: every figure ANALYSIS.md links to a committed result
//! must be that result (within the rounding it is written with), so a figure cannot drift from
//! its source.
//!
//! A figure is a markdown link whose text starts with the number and whose target is a result:
//! `[20,675](docs/results/lab.json#/runs/16/throughput)` (a JSON pointer into the file), with an
//! optional title `"scale 0.001"` when the text shows the value in other units (µs as ms), or
//! `[0.96](docs/results/relay-confirm.txt#L6)`, a text result whose line 6 must contain the
//! link's text.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A figure link: its text, its target file, the fragment and the optional title.
#[derive(Debug)]
struct Figure {
    text: String,
    file: String,
    fragment: String,
    title: Option<String>,
}

/// Every `[text](docs/results/...#fragment "title")` link of `markdown`.
fn figures(markdown: &str) -> Vec<Figure> {
    let mut out = Vec::new();
    let mut rest = markdown;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find("](") else { break };
        let text = &rest[..close];
        let after = &rest[close + 2..];
        let Some(end) = after.find(')') else { break };
        let target = &after[..end];
        if text.contains('[') || !target.starts_with("docs/results/") {
            continue;
        }
        let (link, title) = match target.split_once(" \"") {
            Some((link, title)) => (link, Some(title.trim_end_matches('"').to_owned())),
            None => (target, None),
        };
        let Some((file, fragment)) = link.split_once('#') else {
            continue;
        };
        out.push(Figure {
            text: text.to_owned(),
            file: file.to_owned(),
            fragment: fragment.to_owned(),
            title,
        });
    }
    out
}

/// The number a figure's text starts with (thousands separators allowed), and its decimals.
fn displayed(text: &str) -> Option<(f64, usize)> {
    let number: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.' || *c == '-')
        .filter(|c| *c != ',')
        .collect();
    let decimals = number.split_once('.').map_or(0, |(_, d)| d.len());
    Some((number.parse().ok()?, decimals))
}

/// Why `figure` does not match its source, if it does not.
fn mismatch(figure: &Figure) -> Option<String> {
    let path = root().join(&figure.file);
    let Ok(content) = std::fs::read_to_string(&path) else {
        return Some(format!("{} cannot be read", figure.file));
    };
    if let Some(line) = figure.fragment.strip_prefix('L') {
        let n: usize = line.parse().ok()?;
        let found = content.lines().nth(n.checked_sub(1)?).unwrap_or_default();
        return (!found.contains(&figure.text))
            .then(|| format!("line {n} of {} is {found:?}", figure.file));
    }
    let json: serde_json::Value = match serde_json::from_str(&content) {
        Ok(json) => json,
        Err(e) => return Some(format!("{} is not JSON: {e}", figure.file)),
    };
    let Some(value) = json
        .pointer(&figure.fragment)
        .and_then(serde_json::Value::as_f64)
    else {
        return Some(format!(
            "{} has no number at {}",
            figure.file, figure.fragment
        ));
    };
    let scale = figure
        .title
        .as_deref()
        .and_then(|t| t.strip_prefix("scale "))
        .map_or(Ok(1.0), str::parse::<f64>)
        .ok()?;
    let Some((shown, decimals)) = displayed(&figure.text) else {
        return Some(format!("{:?} starts with no number", figure.text));
    };
    let factor = 10f64.powi(i32::try_from(decimals).unwrap_or(0));
    let rounded = (value * scale * factor).round() / factor;
    ((rounded - shown).abs() > 0.5 / factor)
        .then(|| format!("the source says {value} (x {scale} = {rounded})"))
}

#[test]
fn every_figure_of_the_analysis_is_its_source() {
    let analysis = std::fs::read_to_string(root().join("ANALYSIS.md")).unwrap();
    let all = figures(&analysis);
    assert!(all.len() > 30, "the analysis links {} figures", all.len());
    let wrong: Vec<String> = all
        .iter()
        .filter_map(|f| {
            mismatch(f).map(|why| format!("[{}]({}#{}): {why}", f.text, f.file, f.fragment))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "figures that left their source:\n{}",
        wrong.join("\n")
    );
}

/// The checker itself: a figure off by more than its rounding, or pointing at nothing, is
/// caught; one within its rounding is not.
#[test]
fn a_figure_that_drifted_is_caught() {
    // The results live in the repository; a scratch file beside them stands in.
    let name = format!("docs/results/.figure-check-{}.json", std::process::id());
    let path = root().join(&name);
    std::fs::write(&path, r#"{"runs":[{"throughput":20674.7,"p99_us":3881}]}"#).unwrap();
    let check = |text: &str, fragment: &str, title: Option<&str>| {
        mismatch(&Figure {
            text: text.into(),
            file: name.clone(),
            fragment: fragment.into(),
            title: title.map(str::to_owned),
        })
    };
    let results = [
        check("20,675", "/runs/0/throughput", None),
        check("20,674", "/runs/0/throughput", None),
        check("3.9 ms", "/runs/0/p99_us", Some("scale 0.001")),
        check("3.8 ms", "/runs/0/p99_us", Some("scale 0.001")),
        check("1", "/runs/1/throughput", None),
    ];
    std::fs::remove_file(&path).unwrap();
    assert!(results[0].is_none(), "{:?}", results[0]);
    assert!(results[1].is_some());
    assert!(results[2].is_none(), "{:?}", results[2]);
    assert!(results[3].is_some());
    assert!(results[4].is_some());
    let parsed = figures(
        r#"see [19](docs/results/lab.json#/runs/0/lost) and [x](https://a) [3.9 ms](docs/results/lab.json#/runs/16/latency_us/p99 "scale 0.001")"#,
    );
    assert_eq!(parsed.len(), 2, "{parsed:?}");
    assert_eq!(parsed[1].title.as_deref(), Some("scale 0.001"));
}

/// The collision model's column beside the lab's, as ANALYSIS.md claims them: at every point of
/// the committed run, the share of changes absent from the final state and the model's share at
/// the measured window differ by at most two binomial standard errors.
#[test]
fn the_collision_model_agrees_with_the_lab() {
    let text = std::fs::read_to_string(root().join("docs/results/collision.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 15, "the grid: 5 writer counts by 3 windows");
    let apart: Vec<String> = runs
        .iter()
        .filter_map(|run| {
            let measured = run["loss_share"].as_f64().unwrap();
            let model = run["model_loss_probability_effective"].as_f64().unwrap();
            let changed = run["changed"].as_f64().unwrap();
            let error = (model * (1.0 - model) / changed).sqrt();
            ((measured - model).abs() > 2.0 * error).then(|| {
                format!(
                    "{}: measured {measured}, model {model} (2 SE = {:.3})",
                    run["params"],
                    2.0 * error
                )
            })
        })
        .collect();
    assert!(
        apart.is_empty(),
        "the model and the lab disagree:\n{}",
        apart.join("\n")
    );
}

/// The repository's tracked files (paths relative to its root), as git lists them.
fn tracked_files() -> Vec<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root())
        .args(["ls-files", "-z"])
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git ls-files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("paths are UTF-8")
        .split('\0')
        .filter(|path| !path.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `path` is text this repository writes: source, docs, manifests, CI and scripts.
fn is_prose_or_code(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let extension = name.rsplit_once('.').map(|(_, e)| e);
    matches!(
        extension,
        Some("rs" | "md" | "toml" | "yml" | "yaml" | "sh")
    ) || name == "justfile"
        || path == ".ci/run"
}

/// Whether `line` cites an issue by number (the word, singular or plural, then a number after a
/// space, a hyphen in an anchor, or `#`), other than another project's (a line naming redis-rs or
/// github.com).
fn cites_an_issue(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    if lower.contains("redis-rs") || lower.contains("github.com") {
        return false;
    }
    lower.match_indices("issue").any(|(at, _)| {
        let word_start = lower[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        let rest = &lower[at + "issue".len()..];
        let rest = rest.strip_prefix('s').unwrap_or(rest);
        let spaced = rest.trim_start_matches([' ', '-']);
        let numbered = spaced.strip_prefix('#').unwrap_or(spaced);
        let separated = spaced.len() < rest.len() || numbered.len() < spaced.len();
        word_start && separated && numbered.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// Whether `line` points at a file outside the repository.
fn leaves_the_repository(line: &str) -> bool {
    // Spelled in two halves, so that this file names neither.
    line.contains(concat!("../", "shared")) || line.contains(concat!("REDIS", "-NOTES"))
}

/// The repository stands alone: no line of its own text cites the internal issue tracker by
/// number or a file that lives outside it (another project's issue, such as redis-rs', is a
/// public citation and stays).
#[test]
fn the_repository_stands_alone() {
    let files: Vec<String> = tracked_files()
        .into_iter()
        .filter(|path| is_prose_or_code(path))
        .collect();
    assert!(files.len() > 100, "only {} files checked", files.len());
    let mut found = Vec::new();
    for path in &files {
        // A tracked file deleted in the working tree has no line left to check.
        let Ok(text) = std::fs::read_to_string(root().join(path)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if cites_an_issue(line) || leaves_the_repository(line) {
                found.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "lines citing the internal tracker or files outside the repository:\n{}",
        found.join("\n")
    );
}

/// The checker itself: each shape of an internal citation is caught, another project's issue
/// and ordinary words are not.
#[test]
fn an_internal_citation_is_caught() {
    let fill = |line: &str| line.replace('§', "issue");
    // The fixtures write the word as `§` so that this file cites nothing itself.
    for line in [
        "// Traces (§ 36). The four move together",
        "// § 16's goal: optimistic retries tuned",
        "`GET` (§ 25, part 4), then",
        "[lab.md](lab.md#what-the-service-adds-to-each-request-§-37)",
        "fixed in §s #12 and #13",
        "see § #7",
    ] {
        let line = fill(line);
        assert!(cites_an_issue(&line), "{line}");
    }
    for line in [
        "silently cancel ours (redis-rs § #565)",
        "https://github.com/redis/redis/§s/123",
        "One task §s every SUBSCRIBE",
        "re§ 5 requests",
        "an § with 3 causes",
    ] {
        let line = fill(line);
        assert!(!cites_an_issue(&line), "{line}");
    }
    assert!(leaves_the_repository(concat!(
        "(../",
        "shared/compat/CONTRACT.md)"
    )));
    assert!(leaves_the_repository(concat!("(see `REDIS", "-NOTES.md`)")));
    assert!(!leaves_the_repository("(docs/reliability.md)"));
}

/// A relative link of a markdown document: its line, the path it names and its anchor.
#[derive(Debug, PartialEq)]
struct Link {
    line: usize,
    path: String,
    anchor: Option<String>,
}

/// Whether a line opens or closes a fenced code block.
fn is_fence(line: &str) -> bool {
    line.trim_start().starts_with("```")
}

/// Every relative link of `markdown` (`[text](path)`, `[text](path#anchor)`, with or without a
/// title), outside fenced code blocks. Web and mail links and links within the same document
/// are left out.
fn relative_links(markdown: &str) -> Vec<Link> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in markdown.lines().enumerate() {
        if is_fence(line) {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(open) = rest.find("](") {
            rest = &rest[open + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].trim();
            let target = target.split_once(" \"").map_or(target, |(link, _)| link);
            let target = target.trim_start_matches('<').trim_end_matches('>');
            rest = &rest[end..];
            let external = ["http:", "https:", "mailto:"]
                .iter()
                .any(|scheme| target.starts_with(scheme));
            if target.is_empty() || target.starts_with('#') || external {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor.to_owned())),
                None => (target, None),
            };
            out.push(Link {
                line: n + 1,
                path: path.to_owned(),
                anchor,
            });
        }
    }
    out
}

/// The anchors of a markdown document's headings, as GitHub makes them: lower case, spaces as
/// hyphens, punctuation but `-` and `_` dropped, a repeated one suffixed `-1`, `-2`, ...
fn heading_anchors(markdown: &str) -> Vec<String> {
    let mut anchors: Vec<String> = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if is_fence(line) {
            fenced = !fenced;
            continue;
        }
        let level = line.chars().take_while(|c| *c == '#').count();
        let Some(heading) = line[level..].strip_prefix(' ') else {
            continue;
        };
        if fenced || level == 0 || level > 6 {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                '-' | '_' => Some(c),
                c if c.is_alphanumeric() => Some(c),
                _ => None,
            })
            .collect();
        let seen = anchors
            .iter()
            .filter(|a| **a == slug || a.strip_prefix(slug.as_str()).is_some_and(is_suffix))
            .count();
        anchors.push(if seen == 0 {
            slug
        } else {
            format!("{slug}-{seen}")
        });
    }
    anchors
}

/// Whether `rest` is a repeated heading's suffix, `-1`, `-2`, ...
fn is_suffix(rest: &str) -> bool {
    rest.strip_prefix('-')
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// Every relative link of every tracked markdown file names a file or directory that exists
/// beside that document, and a link to a heading of a markdown file names one it has.
#[test]
fn the_links_of_the_docs_lead_somewhere() {
    let documents: Vec<String> = tracked_files()
        .into_iter()
        .filter(|path| path.ends_with(".md"))
        .collect();
    assert!(documents.len() > 10, "only {} documents", documents.len());
    let mut checked = 0;
    let mut broken = Vec::new();
    for document in &documents {
        let path = root().join(document);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let dir = path.parent().expect("a document is in a directory");
        for link in relative_links(&text) {
            checked += 1;
            let target = dir.join(&link.path);
            let place = format!("{document}:{}", link.line);
            if !target.exists() {
                broken.push(format!("{place}: {} does not exist", link.path));
                continue;
            }
            let Some(anchor) = link.anchor.filter(|_| link.path.ends_with(".md")) else {
                continue;
            };
            let headings = std::fs::read_to_string(&target)
                .map(|text| heading_anchors(&text))
                .unwrap_or_default();
            if !headings.contains(&anchor) {
                broken.push(format!("{place}: {} has no heading #{anchor}", link.path));
            }
        }
    }
    assert!(checked > 50, "only {checked} links checked");
    assert!(
        broken.is_empty(),
        "links to nothing:\n{}",
        broken.join("\n")
    );
}

/// The link finder itself: relative targets with and without anchors and titles are found,
/// web, mail and same-document links and fenced code are not; and headings' anchors are
/// GitHub's.
#[test]
fn the_link_finder_finds_relative_links_only() {
    let found = relative_links(
        "see [a](docs/a.md) and [b](../b.md#part \"title\"), [c](https://x) [d](#here)\n\
         [e](mailto:x@y) [f](results/)\n```\nlet x = [g](h);\n```\n[i](<j k.md>)",
    );
    let link = |line, path: &str, anchor: Option<&str>| Link {
        line,
        path: path.to_owned(),
        anchor: anchor.map(str::to_owned),
    };
    assert_eq!(
        found,
        [
            link(1, "docs/a.md", None),
            link(1, "../b.md", Some("part")),
            link(2, "results/", None),
            link(6, "j k.md", None),
        ],
    );
    let anchors = heading_anchors(
        "# The lab (`flyrtech-lab compare`)\n## Q5. What is wrong with `time.Now()`?\n\
         ```\n# not a heading\n```\n### Figures\n### Figures\n#hashtag\n",
    );
    assert_eq!(
        anchors,
        [
            "the-lab-flyrtech-lab-compare",
            "q5-what-is-wrong-with-timenow",
            "figures",
            "figures-1",
        ],
    );
}

/// The repository paths a text names in backquotes (`crates/…`, `docs/…`, `tools/…`,
/// `deploy/…`, `.ci/…`), with any `:line` or `#anchor` taken off; patterns (`*`, `{…}`,
/// `<…>`) are not paths and are left out.
fn backquoted_paths(text: &str) -> Vec<String> {
    let roots = ["crates/", "docs/", "tools/", "deploy/", ".ci/"];
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| roots.iter().any(|root| quoted.starts_with(root)))
        .filter(|quoted| !quoted.contains(['*', '{', '<', ' ', '$']))
        .map(|quoted| {
            let path = quoted.split(['#', ':']).next().unwrap_or(quoted);
            path.trim_end_matches(['.', ',', ')']).to_owned()
        })
        .collect()
}

/// Every repository path the docs, the README and the analysis name in backquotes exists.
#[test]
fn the_paths_the_docs_name_exist() {
    let missing: Vec<String> = tracked_files()
        .into_iter()
        .filter(|file| {
            Path::new(file).extension().is_some_and(|e| e == "md")
                && (file.starts_with("docs/") || !file.contains('/'))
        })
        .flat_map(|file| {
            let text = std::fs::read_to_string(root().join(&file)).unwrap();
            backquoted_paths(&text)
                .into_iter()
                .filter(|path| !root().join(path).exists())
                .map(move |path| format!("{file}: `{path}`"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "paths that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn backquoted_paths_are_found_and_patterns_left_out() {
    let found = backquoted_paths(
        "see `crates/core/src/ports.rs:12`, `docs/lab.md#the-grid`, `tools/x/*.sh`, `cargo test` \
         and `crates/{core,api}`",
    );
    assert_eq!(found, ["crates/core/src/ports.rs", "docs/lab.md"]);
}

/// README's description of the main job's table names the columns the lab prints: the narrow
/// table's by default, and what `--wide` adds only under `--wide`.
#[test]
fn the_readme_names_the_columns_the_main_job_prints() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let said = readme
        .split("It prints a table (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("README describes the main job's table");
    let (narrow, wide) = said
        .split_once("; `--wide` adds ")
        .expect("and what --wide adds");
    // README's words for the table's headers.
    let header = |named: &str| {
        match named.trim().trim_start_matches("and ") {
            "acknowledged" => "acked",
            "p50 and p99 latency" => "p50 ms",
            "lock wait" => "lock wait ms",
            "Redis round trips" => "RTT/update",
            "the share of the Redis ceiling where redis-benchmark measured it" => "of ceiling",
            other => other,
        }
        .to_owned()
    };
    let default = flyrtech_lab::compare::report::table(&[], false);
    let every = flyrtech_lab::compare::report::table(&[], true);
    for named in narrow.split(", ") {
        let header = header(named);
        assert!(
            default.contains(&header),
            "{named}: {header} not in\n{default}"
        );
    }
    for named in wide.split(", ") {
        let header = header(named);
        assert!(
            !default.contains(&header),
            "{named} is printed without --wide"
        );
        assert!(every.contains(&header), "{named}: {header} not in\n{every}");
    }
}
