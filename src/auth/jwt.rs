//! [`JwtVerifier`]: JWT access tokens (RFC 9068 style) signed by the authorization server with
//! a key from its JWK set, read from a file or fetched from a URL and cached. A token naming a
//! key the cached set does not have makes the set be read again (at most once every
//! `jwks_min_refresh_secs`), so a key rotation at the authorization server is picked up without
//! a restart; a set older than `jwks_cache_secs` is refreshed on use. A failed refresh keeps
//! the last good set. Only RS256, ES256 and EdDSA (Ed25519) are accepted unless configured
//! otherwise, and the key must fit the token's algorithm; `iss`, `aud`, `exp` and `sub` are
//! required, `nbf` checked.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::{AuthConfig, AuthError, Principal};

/// `[auth.jwt]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry; by default `[auth] resource`.
    pub audience: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    /// Accepted algorithms: any of RS256, RS384, RS512, PS256, ES256, ES384, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// How long a fetched key set is used before it is fetched again.
    #[serde(default = "default_cache_secs")]
    pub jwks_cache_secs: u64,
    /// The least time between two reads of the key set for tokens naming an unknown key.
    #[serde(default = "default_min_refresh_secs")]
    pub jwks_min_refresh_secs: u64,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}

fn default_cache_secs() -> u64 {
    300
}

fn default_min_refresh_secs() -> u64 {
    10
}

fn default_leeway_secs() -> u64 {
    30
}

/// A key set fetch may take this long and be this big.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 1024 * 1024;

pub struct JwtVerifier {
    issuer: String,
    audience: String,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    claims: Vec<String>,
    keys: KeySource,
}

/// Where the keys come from, and the set in use.
struct KeySource {
    from: Jwks,
    current: ArcSwap<Option<KeySet>>,
    max_age: Duration,
    min_refresh: Duration,
    /// When the set was last read (or tried), so token floods cannot make membrane hammer the
    /// authorization server.
    last_attempt: Mutex<Option<Instant>>,
    /// One refresh at a time; others wait for its result.
    refreshing: tokio::sync::Mutex<()>,
}

enum Jwks {
    File(PathBuf),
    Url {
        url: reqwest::Url,
        http: reqwest::Client,
    },
}

struct KeySet {
    keys: JwkSet,
    read_at: Instant,
}

impl JwtVerifier {
    pub fn new(
        config: &JwtConfig,
        auth: &AuthConfig,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        let audience = config
            .audience
            .clone()
            .or_else(|| auth.resource.clone())
            .ok_or("[auth.jwt] needs an audience (or set [auth] resource, the default audience)")?;
        let algorithms = config
            .algorithms
            .iter()
            .map(|name| {
                name.parse::<Algorithm>()
                    .ok()
                    .filter(|alg| {
                        !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
                    })
                    .ok_or_else(|| format!("[auth.jwt] algorithm {name} is not supported"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let from = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), None) => Jwks::File(path.clone()),
            (None, Some(url)) => Jwks::Url {
                url: reqwest::Url::parse(url)
                    .map_err(|e| format!("[auth.jwt] jwks_url {url}: {e}"))?,
                http,
            },
            _ => return Err("[auth.jwt] needs exactly one of jwks_file and jwks_url".into()),
        };
        let keys = KeySource {
            from,
            current: ArcSwap::from_pointee(None),
            max_age: Duration::from_secs(config.jwks_cache_secs),
            min_refresh: Duration::from_secs(config.jwks_min_refresh_secs),
            last_attempt: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        };
        if let Jwks::File(_) = keys.from {
            // A file must be right at start: read it now.
            let set = keys.from.read_file()?;
            keys.current.store(Arc::new(Some(set)));
        }
        Ok(Self {
            issuer: config.issuer.clone(),
            audience,
            algorithms,
            leeway: config.leeway_secs,
            claims: auth.claims.clone(),
            keys,
        })
    }

    /// Reads a key set file again (a fetched set refreshes by itself).
    pub async fn reload(&self) -> Result<(), String> {
        if let Jwks::File(_) = self.keys.from {
            let set = self.keys.from.read_file()?;
            self.keys.current.store(Arc::new(Some(set)));
        }
        Ok(())
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let invalid = |reason: &str| AuthError::Invalid(reason.to_owned());
        let header = decode_header(token).map_err(|e| invalid(&format!("malformed JWT: {e}")))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(invalid(&format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header.kid.as_deref();
        let jwk = match self.keys.find(kid, header.alg, false).await? {
            Some(jwk) => jwk,
            None => self
                .keys
                .find(kid, header.alg, true)
                .await?
                .ok_or_else(|| {
                    invalid(&format!(
                        "no key {} fits the token",
                        kid.unwrap_or("(no kid)")
                    ))
                })?,
        };
        let key =
            DecodingKey::from_jwk(&jwk).map_err(|e| invalid(&format!("unusable key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let claims = decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| invalid(&describe(&e)))?
            .claims;
        Ok(self.principal(claims))
    }

    fn principal(&self, claims: Map<String, Value>) -> Principal {
        let subject = claims["sub"].as_str().unwrap_or_default().to_owned();
        // `scope` is a space-separated string (RFC 9068); some servers send `scp` as a list.
        let mut scopes = std::collections::BTreeSet::new();
        for field in ["scope", "scp"] {
            match claims.get(field) {
                Some(Value::String(list)) => {
                    scopes.extend(list.split_whitespace().map(str::to_owned))
                }
                Some(Value::Array(list)) => {
                    scopes.extend(list.iter().filter_map(Value::as_str).map(str::to_owned))
                }
                _ => {}
            }
        }
        let passed_on = self
            .claims
            .iter()
            .filter_map(|name| Some((name.clone(), claims.get(name)?.clone())))
            .collect();
        Principal {
            subject,
            issuer: Some(self.issuer.clone()),
            scopes,
            claims: passed_on,
        }
    }
}

fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer".into(),
        ErrorKind::InvalidAudience => "the token is meant for another audience".into(),
        ErrorKind::InvalidSignature => "the signature does not verify".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        _ => error.to_string(),
    }
}

impl KeySource {
    /// A key of the current set that fits the token (by `kid`, else the first that fits the
    /// algorithm). `refresh` reads the set again first, unless that happened very recently.
    async fn find(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        refresh: bool,
    ) -> Result<Option<Jwk>, AuthError> {
        let stale = self
            .current
            .load()
            .as_ref()
            .as_ref()
            .is_none_or(|set| set.read_at.elapsed() > self.max_age)
            && matches!(self.from, Jwks::Url { .. });
        if refresh || stale {
            self.refresh().await;
        }
        let current = self.current.load();
        let Some(set) = current.as_ref() else {
            return Err(AuthError::Unavailable(
                "the authorization server's keys could not be fetched".into(),
            ));
        };
        let candidates: Vec<&Jwk> = match kid {
            Some(kid) => set.keys.find(kid).into_iter().collect(),
            None => set.keys.keys.iter().collect(),
        };
        Ok(candidates.into_iter().find(|jwk| fits(jwk, alg)).cloned())
    }

    /// Reads the set again, unless it was read (or tried) within `min_refresh`.
    async fn refresh(&self) {
        let _one_at_a_time = self.refreshing.lock().await;
        {
            let mut last = self.last_attempt.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < self.min_refresh) {
                return;
            }
            *last = Some(Instant::now());
        }
        let read = match &self.from {
            Jwks::File(_) => self.from.read_file(),
            Jwks::Url { url, http } => fetch(http, url).await,
        };
        match read {
            Ok(set) => {
                tracing::debug!(keys = set.keys.keys.len(), "read the JWT key set");
                self.current.store(Arc::new(Some(set)));
            }
            Err(e) => tracing::warn!("cannot refresh the JWT key set, keeping the last one: {e}"),
        }
    }
}

impl Jwks {
    fn read_file(&self) -> Result<KeySet, String> {
        let Jwks::File(path) = self else {
            unreachable!("only files are read")
        };
        let text = std::fs::read(path)
            .map_err(|e| format!("cannot read jwks_file {}: {e}", path.display()))?;
        parse_set(&text).map_err(|e| format!("jwks_file {}: {e}", path.display()))
    }
}

async fn fetch(http: &reqwest::Client, url: &reqwest::Url) -> Result<KeySet, String> {
    let request = http
        .get(url.clone())
        .header("accept", "application/json")
        .send();
    let response = tokio::time::timeout(FETCH_TIMEOUT, request)
        .await
        .map_err(|_| format!("{url} did not answer within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    let mut response = response;
    while let Some(chunk) = tokio::time::timeout(FETCH_TIMEOUT, response.chunk())
        .await
        .map_err(|_| format!("{url} stalled"))?
        .map_err(|e| format!("{url}: {e}"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("{url} sent a key set over {MAX_JWKS_BYTES} bytes"));
        }
    }
    parse_set(&body).map_err(|e| format!("{url}: {e}"))
}

fn parse_set(bytes: &[u8]) -> Result<KeySet, String> {
    let keys: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWK set: {e}"))?;
    Ok(KeySet {
        keys,
        read_at: Instant::now(),
    })
}

/// Whether a key can check a token signed with `alg`: the right family and curve, and the
/// key's own `alg`, when it names one, the same.
fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    use base64::Engine;
    let family = match (&jwk.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            // An Ed25519 key must be 32 bytes (a shorter one would make verification panic).
            p.curve == EllipticCurve::Ed25519
                && base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&p.x)
                    .is_ok_and(|x| x.len() == 32)
        }
        _ => false,
    };
    family
        && jwk
            .common
            .key_algorithm
            .is_none_or(|a| a == KeyAlgorithm::from(alg))
}
