//! Who may do what: API keys with scopes, checked before any handler runs.
//!
//! A key is a random secret (`flyr_` and 64 hex digits) that the service never stores: the keys
//! file (`flyrtech api-key new`, default `./flyrtech-keys`) holds one line per key with its
//! name, its scope and the SHA-256 of the key. A request presents `Authorization: Bearer <key>`;
//! its hash is compared with every stored hash in constant time ([`subtle`]), without stopping
//! at the first match, so the time taken says nothing about which key, or how much of one, was
//! right. Nothing about a key (the key, its hash, its name) is logged.
//!
//! | scope | may |
//! |---|---|
//! | `read` | read journeys and the cache |
//! | `write` | also change journeys and the cache |
//! | `admin` | also read `/metrics` |
//!
//! `/health`, `/ready`, the OpenAPI document and Swagger UI are open. With `--open-reads`, reads
//! need no key either. No key, or an unknown one: 401 with `WWW-Authenticate: Bearer`; a key
//! without the scope: 403. Without a keys file the service runs without authentication, and
//! [`check_exposure`] allows that only on a loopback address or with `--insecure-no-auth`.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::Method;
use rand::RngExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::problem::ApiError;

/// What a key may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read journeys and the cache.
    Read,
    /// Also change them.
    Write,
    /// Also read `/metrics`.
    Admin,
}

impl Scope {
    /// The name used in the keys file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "admin" => Ok(Self::Admin),
            other => Err(format!("{other:?} is not a scope: read, write or admin")),
        }
    }
}

/// Why the keys file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// It cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `NAME SCOPE SHA256`.
    #[error("{path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// It holds no key (a service that loads it would refuse every request).
    #[error("{0}: holds no key; create one with `flyrtech api-key new NAME --scope write`")]
    Empty(PathBuf),
    /// The name is not one word.
    #[error("a key's name is one word of letters, digits, '-', '_' or '.': {0:?}")]
    Name(String),
}

/// One stored key: its name and scope, and the SHA-256 of the secret.
#[derive(Clone)]
struct StoredKey {
    name: Arc<str>,
    scope: Scope,
    hash: [u8; 32],
}

/// The keys a service accepts. Its `Debug` shows how many, never a hash.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<StoredKey>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(raw: &str) -> Option<[u8; 32]> {
    if raw.len() != 64 || !raw.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&raw[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl ApiKeys {
    /// The default keys file.
    pub const DEFAULT_FILE: &'static str = "flyrtech-keys";

    /// Reads a keys file: `NAME SCOPE SHA256` per line, `#` comments and blank lines ignored.
    ///
    /// # Errors
    /// [`KeysError`] naming the file and line.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Io {
            path: path.to_owned(),
            source,
        })?;
        let line_error = |line: usize, reason: &str| KeysError::Line {
            path: path.to_owned(),
            line,
            reason: reason.to_owned(),
        };
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, scope, hash] = fields[..] else {
                return Err(line_error(n + 1, "expected NAME SCOPE SHA256"));
            };
            if !valid_name(name) {
                return Err(line_error(n + 1, "the name is not one word"));
            }
            let scope = scope.parse().map_err(|e: String| line_error(n + 1, &e))?;
            let hash = unhex(hash)
                .ok_or_else(|| line_error(n + 1, "the hash is not 64 hex digits (SHA-256)"))?;
            keys.push(StoredKey {
                name: name.into(),
                scope,
                hash,
            });
        }
        if keys.is_empty() {
            return Err(KeysError::Empty(path.to_owned()));
        }
        Ok(Self { keys })
    }

    /// Makes a new key, appends its hash to `path` (created readable by its owner only), and
    /// returns the key: the only time it is ever shown.
    ///
    /// # Errors
    /// [`KeysError::Name`] for a name that is not one word; [`KeysError::Io`].
    pub fn create(path: &Path, name: &str, scope: Scope) -> Result<String, KeysError> {
        if !valid_name(name) {
            return Err(KeysError::Name(name.to_owned()));
        }
        let secret: [u8; 32] = rand::rng().random();
        let key = format!("flyr_{}", hex(&secret));
        let io = |source| KeysError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        writeln!(file, "{name} {scope} {}", hex(&sha256(&key))).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(key)
    }

    /// The scope of `presented`, if it is one of the keys. Every stored hash is compared, in
    /// constant time.
    pub fn scope_of(&self, presented: &str) -> Option<Scope> {
        self.known(KeyDigest(sha256(presented)))
            .map(|key| key.scope)
    }

    /// The key a presented hash is, compared with every stored hash in constant time (no early
    /// exit); of two keys with the same secret, the wider scope.
    pub fn known(&self, KeyDigest(hash): KeyDigest) -> Option<KnownKey> {
        let mut found: Option<&StoredKey> = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&hash)) && found.is_none_or(|f| key.scope > f.scope) {
                found = Some(key);
            }
        }
        found.map(|key| KnownKey {
            name: Arc::clone(&key.name),
            scope: key.scope,
        })
    }
}

/// A key the service knows, as a request presented it: its name (the rate limit's and the
/// quotas' client) and scope. Never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownKey {
    /// The name given at `flyrtech api-key new NAME`.
    pub name: Arc<str>,
    /// What it may do.
    pub scope: Scope,
}

/// The SHA-256 of the bearer key a request presents, hashed once per request (kept in its
/// extensions) and compared with every key. Its `Debug` shows nothing of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

impl KeyDigest {
    /// The `Authorization: Bearer <key>` of `request` (`bearer` in any case), hashed once.
    pub fn of(request: &mut Request) -> Option<Self> {
        if let Some(digest) = request.extensions().get::<Self>() {
            return Some(*digest);
        }
        let value = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let (scheme, key) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let digest = Self(sha256(key.trim()));
        request.extensions_mut().insert(digest);
        Some(digest)
    }
}

/// How `serve` authenticates.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The keys; `None` runs without authentication (loopback only, unless allowed).
    pub keys: Option<ApiKeys>,
    /// Reads need no key.
    pub open_reads: bool,
}

/// The scope a request needs, or `None` for the open routes.
pub(crate) fn needed(method: &Method, path: &str, open_reads: bool) -> Option<Scope> {
    if path == "/metrics" {
        return Some(Scope::Admin);
    }
    if !path.starts_with("/api/") {
        // /health, /ready, Swagger UI, the OpenAPI document, and unknown routes (404).
        return None;
    }
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS if open_reads => None,
        Method::GET | Method::HEAD | Method::OPTIONS => Some(Scope::Read),
        _ => Some(Scope::Write),
    }
}

/// Who a request says it is: the key it presented when that is one of the service's keys.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The verified key; `None` without keys, without a bearer, or for one that is not a key.
    pub key: Option<KnownKey>,
    /// Whether a bearer value was presented at all (to word the 401).
    pub presented: bool,
}

impl Access {
    /// Who `request` is: its bearer value hashed once and compared with every key. Without
    /// keys nothing is hashed, and every request is anonymous: a bearer value then names
    /// nobody, so it cannot buy a request a rate limit of its own.
    pub fn identify(&self, request: &mut Request) -> Identity {
        let Some(keys) = &self.keys else {
            return Identity::default();
        };
        let presented = KeyDigest::of(request);
        Identity {
            key: presented.and_then(|digest| keys.known(digest)),
            presented: presented.is_some(),
        }
    }

    /// Whether `request`, made by `identity`, may reach its handler: 401 without a known key,
    /// 403 without the scope its route needs. Run by [`super::gate`] before the handler.
    ///
    /// # Errors
    /// The 401 or 403 to answer instead.
    pub fn authorize(&self, request: &Request, identity: &Identity) -> Result<(), ApiError> {
        if self.keys.is_none() {
            return Ok(());
        }
        let Some(scope) = needed(request.method(), request.uri().path(), self.open_reads) else {
            return Ok(());
        };
        match &identity.key {
            None => Err(ApiError::unauthorized(if identity.presented {
                "the bearer key is not one of this service's keys"
            } else {
                "this route needs `Authorization: Bearer <key>` (`flyrtech api-key new`)"
            })),
            Some(key) if key.scope < scope => Err(ApiError::forbidden(format!(
                "this route needs a key with the {scope} scope; the key presented has {}",
                key.scope
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// Why `serve` refuses to start with the access it was given.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to listen on {0} without authentication: anyone who reaches it could change any \
     journey. Give it keys (`--api-keys PATH`, made with `flyrtech api-key new NAME --scope \
     write`), listen on a loopback address, or accept the risk with `--insecure-no-auth`"
)]
pub struct Exposed(pub SocketAddr);

/// Without keys, a loopback address only, unless `insecure` says otherwise.
///
/// # Errors
/// [`Exposed`] naming the address and the flags.
pub fn check_exposure(listen: SocketAddr, access: &Access, insecure: bool) -> Result<(), Exposed> {
    if access.keys.is_some() || listen.ip().is_loopback() || insecure {
        Ok(())
    } else {
        Err(Exposed(listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_accepted_with_its_scope_and_never_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        let writer = ApiKeys::create(&path, "ci", Scope::Write).expect("create");
        let reader = ApiKeys::create(&path, "dash", Scope::Read).expect("create");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&writer) && !text.contains(&reader), "{text}");
        let keys = ApiKeys::load(&path).expect("load");
        assert_eq!(keys.scope_of(&writer), Some(Scope::Write));
        assert_eq!(keys.scope_of(&reader), Some(Scope::Read));
        assert_eq!(keys.scope_of("flyr_0000"), None);
        assert_eq!(keys.scope_of(&writer[..writer.len() - 1]), None);
        assert_eq!(format!("{keys:?}"), "ApiKeys { keys: 2 }");
        let known = keys.known(KeyDigest(sha256(&writer))).expect("known");
        assert_eq!((&*known.name, known.scope), ("ci", Scope::Write));
    }

    #[test]
    fn a_bad_keys_file_names_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        std::fs::write(&path, "# comment\nci write abc\n").expect("write");
        let e = ApiKeys::load(&path).expect_err("a short hash");
        assert!(e.to_string().contains("line 2"), "{e}");
        std::fs::write(&path, "# nothing\n").expect("write");
        assert!(matches!(ApiKeys::load(&path), Err(KeysError::Empty(_))));
        assert!(matches!(
            ApiKeys::create(&path, "two words", Scope::Read),
            Err(KeysError::Name(_))
        ));
    }

    #[test]
    fn each_route_needs_its_scope() {
        let get = Method::GET;
        let put = Method::PUT;
        assert_eq!(needed(&get, "/health", false), None);
        assert_eq!(needed(&get, "/ready", false), None);
        assert_eq!(needed(&get, "/swagger-ui/", false), None);
        assert_eq!(needed(&get, "/api-docs/openapi.json", false), None);
        assert_eq!(needed(&get, "/metrics", true), Some(Scope::Admin));
        assert_eq!(needed(&get, "/api/journeys", false), Some(Scope::Read));
        assert_eq!(needed(&get, "/api/journeys", true), None);
        assert_eq!(
            needed(&put, "/api/journeys/J/status", true),
            Some(Scope::Write)
        );
        assert_eq!(
            needed(&Method::DELETE, "/api/cache/k", true),
            Some(Scope::Write)
        );
    }

    #[test]
    fn without_keys_only_loopback_unless_insecure() {
        let open = Access::default();
        let any: SocketAddr = "0.0.0.0:5000".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        assert!(check_exposure(local, &open, false).is_ok());
        let refused = check_exposure(any, &open, false).expect_err("exposed");
        assert!(refused.to_string().contains("--api-keys"), "{refused}");
        assert!(
            refused.to_string().contains("--insecure-no-auth"),
            "{refused}"
        );
        assert!(check_exposure(any, &open, true).is_ok());
    }
}
