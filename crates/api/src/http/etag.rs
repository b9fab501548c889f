//! Conditional requests: the journey version is the entity tag.
//!
//! `GET` answers `ETag: "<version>"`; a `PUT` with `If-Match` is applied only if the journey is
//! still at that version, checked by the strategy inside the same atomic step as the write, so an
//! HTTP client that read version 7 can never overwrite a change it has not seen (412 instead).
//! Versions grow by exactly one per applied change, which makes them strong validators.

use axum::http::{HeaderMap, HeaderValue, header};
use flyrtech_core::JourneyVersion;

use super::problem::ApiError;

/// The entity tag of a journey at `version`.
pub fn etag(version: JourneyVersion) -> HeaderValue {
    HeaderValue::try_from(format!("\"{version}\""))
        .expect("a quoted decimal number is a valid header value")
}

/// What an `If-Match` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No header: apply unconditionally.
    Absent,
    /// `*`: any current version.
    Any,
    /// One of these versions. Tags that are weak or not ours can never match under the strong
    /// comparison `If-Match` requires, so they are dropped; an empty list always fails.
    Versions(Vec<JourneyVersion>),
}

impl IfMatch {
    /// Parses every `If-Match` header of a request.
    ///
    /// # Errors
    /// 400 when a header is not a list of quoted entity tags.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
        if values.peek().is_none() {
            return Ok(Self::Absent);
        }
        let mut versions = Vec::new();
        for value in values {
            let text = value
                .to_str()
                .map_err(|_| ApiError::bad_request("If-Match is not visible ASCII"))?;
            for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag == "*" {
                    return Ok(Self::Any);
                }
                if let Some(version) = parse_tag(tag)? {
                    versions.push(version);
                }
            }
        }
        Ok(Self::Versions(versions))
    }

    /// Whether `current` satisfies the precondition.
    pub fn matches(&self, current: JourneyVersion) -> bool {
        match self {
            Self::Absent | Self::Any => true,
            Self::Versions(list) => list.contains(&current),
        }
    }
}

/// `"7"` → `Some(7)`; a weak or foreign tag → `None`; anything unquoted → 400.
fn parse_tag(tag: &str) -> Result<Option<JourneyVersion>, ApiError> {
    let (weak, strong) = match tag.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    };
    let inner = strong
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "If-Match must hold quoted entity tags such as \"3\", not {tag}"
            ))
        })?;
    if weak {
        return Ok(None);
    }
    Ok(inner.parse::<u64>().ok().map(JourneyVersion::new))
}

/// Whether an `If-None-Match` header already names `current` (the client's copy is fresh).
pub fn none_match(headers: &HeaderMap, current: JourneyVersion) -> bool {
    let ours = format!("\"{current}\"");
    headers.get_all(header::IF_NONE_MATCH).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',').map(str::trim).any(|tag| {
                // If-None-Match uses the weak comparison.
                tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours
            })
        })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn v(n: u64) -> JourneyVersion {
        JourneyVersion::new(n)
    }

    #[test]
    fn if_match_forms() {
        let parse = |vals: &[&str]| IfMatch::from_headers(&headers(header::IF_MATCH, vals));
        assert_eq!(parse(&[]).unwrap(), IfMatch::Absent);
        assert_eq!(parse(&["*"]).unwrap(), IfMatch::Any);
        assert_eq!(parse(&["\"3\""]).unwrap(), IfMatch::Versions(vec![v(3)]));
        assert_eq!(
            parse(&["\"3\", \"5\"", "\"8\""]).unwrap(),
            IfMatch::Versions(vec![v(3), v(5), v(8)])
        );
        // Weak and foreign tags never match a strong comparison.
        assert_eq!(
            parse(&["W/\"3\", \"abc\""]).unwrap(),
            IfMatch::Versions(vec![])
        );
        assert!(!parse(&["W/\"3\""]).unwrap().matches(v(3)));
        let err = parse(&["3"]).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn if_none_match_is_weak() {
        assert!(none_match(
            &headers(header::IF_NONE_MATCH, &["W/\"4\""]),
            v(4)
        ));
        assert!(none_match(
            &headers(header::IF_NONE_MATCH, &["\"1\", \"4\""]),
            v(4)
        ));
        assert!(!none_match(
            &headers(header::IF_NONE_MATCH, &["\"3\""]),
            v(4)
        ));
        assert!(!none_match(&HeaderMap::new(), v(4)));
    }

    #[test]
    fn etag_is_the_quoted_version() {
        assert_eq!(etag(v(12)), HeaderValue::from_static("\"12\""));
    }
}
