//! Secrets kept out of what the service prints: a password in a connection URL is replaced by
//! `***` wherever a URL reaches a log line, an error, `/ready` or a report.
//!
//! URLs are the one place an operator puts a secret on a command line or in an environment
//! variable (`redis://:password@host`, `rediss://user:password@host`, `postgres://user:password@host/db`,
//! `nats://user:password@host`), and they are the first thing an error names. Every such message
//! goes through [`redact`]; the suite starts the binary with a password and greps everything it
//! printed for it.
//!
//! The room of what must not leak or be over-granted: the redaction here, and [`acl`], the
//! `ACL SETUSER` line each role needs (least privilege).
//!
//! # What it may import
//! The core crate and [`crate::keys`] (the key patterns a role is granted).

pub mod acl;

/// `url` with the password of its user info (and of each comma-separated seed) replaced by
/// `***`, whatever its shape: it works on the raw text, never on a parsed URL, so a URL that
/// does not parse (a password with `/`, `?`, `#` or `@` in it), one without a scheme
/// (`:pw@host:6379`, `user:pw@host`) and a list of seeds are redacted too. The user info is
/// everything between a scheme's `://` (or the start) and the last `@` before the next seed's
/// scheme; its password is what follows its first `:`. Text that holds no such user info is
/// returned as it is.
pub fn redact(url: &str) -> String {
    let starts: Vec<usize> = url.match_indices("://").map(|(i, _)| i + 3).collect();
    if starts.is_empty() {
        return redact_userinfo(url, 0, url.len());
    }
    let mut out = String::with_capacity(url.len());
    let mut copied = 0;
    for (n, &start) in starts.iter().enumerate() {
        // This seed's authority ends where the next seed's scheme begins.
        let end = starts
            .get(n + 1)
            .map_or(url.len(), |&next| scheme_start(url, next - 3));
        let redacted = redact_userinfo(&url[..end], start, end);
        out.push_str(&redacted[copied..]);
        copied = end;
    }
    out.push_str(&url[copied..]);
    out
}

/// The index where the scheme ending at `colon` (the `:` of its `://`) begins.
fn scheme_start(text: &str, colon: usize) -> usize {
    text[..colon]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
        .map_or(0, |i| i + 1)
}

/// `text[..end]` with the password in the user info starting at `start` replaced.
fn redact_userinfo(text: &str, start: usize, end: usize) -> String {
    let region = &text[start..end];
    let Some(at) = region.rfind('@') else {
        return text[..end].to_owned();
    };
    let Some(colon) = region[..at].find(':') else {
        return text[..end].to_owned();
    };
    format!("{}:***{}", &text[..start + colon], &text[start + at..end])
}

/// Free text (an error's message, a log line) with every word that holds a user info's
/// password redacted as [`redact`] does, so an error that quotes a URL prints no password.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word_start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), word_start) {
            (true, Some(start)) => {
                out.push_str(&redact(&text[start..i]));
                out.push(c);
                word_start = None;
            }
            (true, None) => out.push(c),
            (false, None) => word_start = Some(i),
            (false, Some(_)) => {}
        }
    }
    if let Some(start) = word_start {
        out.push_str(&redact(&text[start..]));
    }
    out
}

/// Every word of `line` that is a URL, redacted (for command lines recorded in reports).
pub fn redact_words<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            // `--redis-url=redis://:pw@host`
            Some((flag, value)) if flag.starts_with('-') => format!("{flag}={}", redact(value)),
            _ => redact(w),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_replaced_and_everything_else_kept() {
        for (url, expected) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://:s3cret@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            (
                "rediss://svc:p@ss:w0rd@host:6380",
                "rediss://svc:***@host:6380",
            ),
            ("redis://user@host", "redis://user@host"),
            (
                "redis://:a@h1:1,redis://:b@h2:2",
                "redis://:***@h1:1,redis://:***@h2:2",
            ),
            (
                "postgres://flyr:pw@127.0.0.1:5432/db?sslmode=disable",
                "postgres://flyr:***@127.0.0.1:5432/db?sslmode=disable",
            ),
            ("not a url", "not a url"),
            // Shapes that do not parse as URLs: every one loses its password.
            (
                "redis://:Sl/ash?Pw#991@127.0.0.1:5555",
                "redis://:***@127.0.0.1:5555",
            ),
            (":pw@127.0.0.1:5555", ":***@127.0.0.1:5555"),
            ("svc:pw@host:6379/0", "svc:***@host:6379/0"),
            (
                "redis://:p,w@h1:1,rediss://u:q@w@h2:2",
                "redis://:***@h1:1,rediss://u:***@h2:2",
            ),
            ("redis://h1:1,redis://h2:2", "redis://h1:1,redis://h2:2"),
        ] {
            assert_eq!(redact(url), expected, "{url}");
        }
    }

    #[test]
    fn free_text_loses_every_password_it_quotes() {
        let text =
            "invalid config file f.toml: redis_url = \"redis://:Pw@h:5555\n  see :x@y\t(tls)";
        assert_eq!(
            redact_text(text),
            "invalid config file f.toml: redis_url = \"redis://:***@h:5555\n  see :***@y\t(tls)"
        );
        assert_eq!(
            redact_text("user@example.com wrote"),
            "user@example.com wrote"
        );
    }

    #[test]
    fn command_lines_keep_their_flags_and_lose_their_passwords() {
        let line = redact_words([
            "flyrtech",
            "--redis-url",
            "redis://:pw1@h:1",
            "--events-url=redis://u:pw2@h:2",
            "serve",
        ]);
        assert_eq!(
            line,
            "flyrtech --redis-url redis://:***@h:1 --events-url=redis://u:***@h:2 serve"
        );
    }
}
