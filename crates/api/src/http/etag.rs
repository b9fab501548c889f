//! Conditional requests: the journey version is the entity tag.
//!
//! `GET` answers `ETag: "<version>"`; a `PUT` with `If-Match` is applied only if the journey is
//! still at that version, checked by the strategy inside the same atomic step as the write, so an
//! HTTP client that read version 7 can never overwrite a change it has not seen (412 instead).
//! Versions grow by exactly one per applied change, which makes them strong validators.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use flyrtech_core::JourneyVersion;

use super::problem::ApiError;

/// The entity tag of a journey at `version`.
pub fn etag(version: JourneyVersion) -> HeaderValue {
    HeaderValue::try_from(format!("\"{version}\""))
        .expect("a quoted decimal number is a valid header value")
}

/// A request's `If-Match` and `If-None-Match` headers, taken without copying the rest of its
/// headers (the `HeaderMap` extractor clones them all, on every request). They are only read
/// here; parsing, and a 400 for a malformed `If-Match`, happens where the handler asks
/// ([`IfMatch::parse`]), after the path and the body have been checked.
#[derive(Debug, Default, Clone)]
pub struct Conditions {
    if_match: Vec<HeaderValue>,
    if_none_match: Vec<HeaderValue>,
}

impl Conditions {
    /// The conditions of `headers`.
    pub fn of(headers: &HeaderMap) -> Self {
        let all = |name: HeaderName| headers.get_all(name).iter().cloned().collect();
        Self {
            if_match: all(header::IF_MATCH),
            if_none_match: all(header::IF_NONE_MATCH),
        }
    }

    /// What `If-Match` asks for.
    ///
    /// # Errors
    /// 400 when a header is not a list of quoted entity tags.
    pub fn if_match(&self) -> Result<IfMatch, ApiError> {
        IfMatch::parse(&self.if_match)
    }

    /// Whether `If-None-Match` already names `current` (the client's copy is fresh).
    pub fn none_match(&self, current: JourneyVersion) -> bool {
        none_match(&self.if_none_match, current)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Conditions {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.headers))
    }
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
    pub fn parse(values: &[HeaderValue]) -> Result<Self, ApiError> {
        if values.is_empty() {
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

/// Whether one of the `If-None-Match` values already names `current`.
fn none_match(values: &[HeaderValue], current: JourneyVersion) -> bool {
    if values.is_empty() {
        return false;
    }
    let ours = format!("\"{current}\"");
    values.iter().any(|value| {
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

    fn headers(name: header::HeaderName, values: &[&str]) -> Conditions {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        Conditions::of(&h)
    }

    fn v(n: u64) -> JourneyVersion {
        JourneyVersion::new(n)
    }

    #[test]
    fn if_match_forms() {
        let parse = |vals: &[&str]| headers(header::IF_MATCH, vals).if_match();
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
        assert!(headers(header::IF_NONE_MATCH, &["W/\"4\""]).none_match(v(4)));
        assert!(headers(header::IF_NONE_MATCH, &["\"1\", \"4\""]).none_match(v(4)));
        assert!(headers(header::IF_NONE_MATCH, &["*"]).none_match(v(4)));
        assert!(!headers(header::IF_NONE_MATCH, &["\"3\""]).none_match(v(4)));
        assert!(!Conditions::default().none_match(v(4)));
        // Only the two condition headers are taken.
        assert!(!headers(header::IF_MATCH, &["\"4\""]).none_match(v(4)));
    }

    #[test]
    fn etag_is_the_quoted_version() {
        assert_eq!(etag(v(12)), HeaderValue::from_static("\"12\""));
        assert_eq!(etag(v(0)), HeaderValue::from_static("\"0\""));
        assert_eq!(
            etag(v(u64::MAX)),
            HeaderValue::from_static("\"18446744073709551615\"")
        );
    }
}
