//! Secrets kept out of what the service prints: a password in a connection URL is replaced by
//! `***` wherever a URL reaches a log line, an error, `/ready` or a report.
//!
//! URLs are the one place an operator puts a secret on a command line or in an environment
//! variable (`redis://:password@host`, `rediss://user:password@host`, `postgres://user:password@host/db`,
//! `nats://user:password@host`), and they are the first thing an error names. Every such message
//! goes through [`redact`]; the suite starts the binary with a password and greps everything it
//! printed for it.

/// `url` with the password of its user info (and of each comma-separated seed) replaced by
/// `***`; anything that is not such a URL is returned as it is.
pub fn redact(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..authority_start],
        &userinfo[..colon],
        &url[authority_start + at..]
    )
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
        ] {
            assert_eq!(redact(url), expected, "{url}");
        }
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
