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
