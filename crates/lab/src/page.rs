//! The frame of the lab's HTML pages (`compare --html`, `verify --html`): one self-contained
//! file each, its styles inline and its charts inline SVG, no script, nothing fetched. The
//! page's own Content-Security-Policy forbids every load but inline styles and `data:` images,
//! so a page that tried to reach a network would say so in the browser's console (the suite
//! opens both pages in headless Chromium and requires a silent console). It imports no other
//! room: the comparison's and verify's pages build on it, and the reports' figures are written
//! the same way in tables and on pages ([`figure`]).

use maud::{DOCTYPE, Markup, PreEscaped, html};

/// What the browser may load for a page: nothing but its own inline styles and `data:` images.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const STYLE: &str = r#"
:root { --ink: #1d2329; --muted: #5b6670; --rule: #d5dbe0; --good: #1b7a35; --bad: #b3261e;
        --warn: #8a5a00; --band: #f4f6f8; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); margin: 0 auto; max-width: 1280px; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 32px 0 8px; border-bottom: 2px solid var(--rule); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 20px 0 6px; }
p.lede { color: var(--muted); margin: 0 0 16px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--rule); text-align: right; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
td.good, span.good { color: var(--good); font-weight: 600; }
td.bad, span.bad { color: var(--bad); font-weight: 700; }
td.undecided, span.undecided { color: var(--warn); font-weight: 600; }
figure { margin: 8px 0 16px; }
figure svg { width: 100%; height: auto; border: 1px solid var(--rule); }
figcaption { color: var(--muted); font-size: 13px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
code { font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; overflow-wrap: anywhere; }
.verdict-banner { font-size: 18px; padding: 8px 12px; border-left: 6px solid var(--rule); background: var(--band); }
.verdict-banner.good { border-color: var(--good); }
.verdict-banner.bad { border-color: var(--bad); }
.verdict-banner.undecided { border-color: var(--warn); }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  section { break-inside: avoid; }
  figure svg { border: none; }
}
"#;

/// A whole page: `title`, then `body`.
pub fn document(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="Content-Security-Policy" content=(CONTENT_SECURITY_POLICY);
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
    .into_string()
}

/// A figure to three significant digits, without trailing zeros (`61.8`, `0.8`, `1.05`, `3650`):
/// what a threshold or a ratio means, not the float's noise.
pub fn figure(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    #[allow(clippy::cast_possible_truncation)]
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = usize::try_from((2 - magnitude).max(0)).unwrap_or(0);
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// `x` with at most three significant digits and thousands separated (`12,345`, `0.0123`).
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return "–".to_owned();
    }
    if x.abs() >= 1000.0 {
        let whole = format!("{:.0}", x.abs());
        let mut grouped = String::new();
        for (i, digit) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        return if x < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        };
    }
    figure(x)
}

/// A count with thousands separated.
pub fn count(n: impl Into<u64>) -> String {
    number(n.into() as f64)
}

/// A share as a percentage with one decimal (`99.5 %`).
pub fn percent(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_and_kept_short() {
        for (x, shown) in [
            (0.0, "0"),
            (0.012_345, "0.0123"),
            (61.83, "61.8"),
            (999.4, "999"),
            (1000.0, "1,000"),
            (1_234_567.8, "1,234,568"),
            (-4321.0, "-4,321"),
            (f64::NAN, "–"),
        ] {
            assert_eq!(number(x), shown, "{x}");
        }
        assert_eq!(count(18_903u64), "18,903");
        assert_eq!(percent(0.995), "99.5 %");
    }

    #[test]
    fn a_page_escapes_its_text_and_allows_no_load() {
        let page = document("a <b> & c", html! { p { "<script>" } });
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(
            page.contains("<title>a &lt;b&gt; &amp; c</title>"),
            "{page}"
        );
        assert!(page.contains("<p>&lt;script&gt;</p>"), "{page}");
        assert!(page.contains("default-src 'none'"), "{page}");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "{page}"
        );
    }
}
