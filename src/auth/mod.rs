//! Who is calling: membrane as an OAuth 2.1 resource server, as the MCP authorization spec
//! asks of an MCP endpoint. [`Authenticator`] checks the bearer token of a request, a static
//! token from a file ([`StaticTokens`]) or a JWT access token signed by a key of the
//! authorization server's JWK set ([`JwtVerifier`]), and yields the [`Principal`] it stands for:
//! its subject, scopes and the claims the operator chose to pass on. [`ScopeRules`] say which
//! scopes a method or tool needs; [`ResourceMetadata`] is what membrane publishes at
//! `/.well-known/oauth-protected-resource` (RFC 9728) so clients find the authorization
//! server. The client's token is membrane's business alone: it is never sent upstream. Nothing
//! here knows HTTP routing; the transport's layers call in.

mod jwt;
mod scopes;
mod tokens;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;

pub use jwt::{JwtConfig, JwtVerifier};
pub use scopes::{ScopeRule, ScopeRules};
pub use tokens::{STATIC_ISSUER, StaticTokens};

/// The authenticated caller of a session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Principal {
    pub subject: String,
    /// Who vouched for it: the JWT issuer, or [`STATIC_ISSUER`].
    pub issuer: Option<String>,
    pub scopes: BTreeSet<String>,
    /// The claims the operator passes on to plugins (`[auth] claims`), as JSON.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Principal {
    /// Whether `other` is the same caller (a session belongs to one).
    pub fn same_as(&self, other: &Principal) -> bool {
        self.subject == other.subject && self.issuer == other.issuer
    }

    /// Whether `caller` may use a session opened by `owner`: the same principal, or neither
    /// authenticated.
    pub fn may_use(owner: Option<&Principal>, caller: Option<&Principal>) -> bool {
        match (owner, caller) {
            (None, None) => true,
            (Some(owner), Some(caller)) => owner.same_as(caller),
            _ => false,
        }
    }
}

/// `[auth]` in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Static bearer tokens, one per line (see [`StaticTokens`]).
    pub bearer_tokens_file: Option<PathBuf>,
    /// JWT access tokens from an authorization server.
    pub jwt: Option<JwtConfig>,
    /// This endpoint's canonical URI (`https://mcp.example.com/mcp`); by default it is derived
    /// from each request's `Host`.
    pub resource: Option<String>,
    /// Published in the resource metadata; by default the JWT issuer.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Published in the resource metadata.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Scopes every request needs.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// More scopes for some methods and tools.
    #[serde(default)]
    pub scopes: Vec<ScopeRule>,
    /// JWT claims handed to plugins with the principal (e.g. `groups`, `email`).
    #[serde(default)]
    pub claims: Vec<String>,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs a bearer token (Authorization: Bearer ...)")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token could not be checked (the authorization server's keys are unreachable).
    #[error("cannot check tokens right now: {0}")]
    Unavailable(String),
}

/// Checks bearer tokens and says what requests need.
pub struct Authenticator {
    tokens_file: Option<PathBuf>,
    tokens: ArcSwap<StaticTokens>,
    jwt: Option<JwtVerifier>,
    pub scopes: ScopeRules,
    pub metadata: ResourceMetadata,
}

impl Authenticator {
    /// Reads the token file and the JWT keys (a `jwks_url` is fetched when first needed, so a
    /// slow authorization server does not hold up the start).
    pub fn new(config: &AuthConfig, http: reqwest::Client) -> Result<Self, String> {
        if config.bearer_tokens_file.is_none() && config.jwt.is_none() {
            return Err(
                "[auth] needs bearer_tokens_file or [auth.jwt] (or both) to check tokens".into(),
            );
        }
        let tokens = match &config.bearer_tokens_file {
            Some(path) => StaticTokens::load(path)?,
            None => StaticTokens::default(),
        };
        let jwt = config
            .jwt
            .as_ref()
            .map(|jwt| JwtVerifier::new(jwt, config, http))
            .transpose()?;
        let mut authorization_servers = config.authorization_servers.clone();
        if authorization_servers.is_empty()
            && let Some(jwt) = &config.jwt
        {
            authorization_servers.push(jwt.issuer.clone());
        }
        Ok(Self {
            tokens_file: config.bearer_tokens_file.clone(),
            tokens: ArcSwap::from_pointee(tokens),
            jwt,
            scopes: ScopeRules::new(&config.required_scopes, &config.scopes),
            metadata: ResourceMetadata {
                resource: config.resource.clone(),
                authorization_servers,
                scopes_supported: config.scopes_supported.clone(),
            },
        })
    }

    /// The principal of a request's `Authorization` header.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Arc<Principal>, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Invalid(format!(
                "the {scheme} scheme is not accepted; send Authorization: Bearer <token>"
            )));
        }
        let token = token.trim();
        if let Some(principal) = self.tokens.load().verify(token) {
            return Ok(principal);
        }
        match &self.jwt {
            Some(jwt) if token.split('.').count() == 3 => jwt.verify(token).await.map(Arc::new),
            _ => Err(AuthError::Invalid("unknown token".into())),
        }
    }

    /// Reads the token file and a JWK set file again; on error what is in use stays.
    pub async fn reload(&self) -> Result<(), String> {
        if let Some(path) = &self.tokens_file {
            self.tokens.store(Arc::new(StaticTokens::load(path)?));
        }
        if let Some(jwt) = &self.jwt {
            jwt.reload().await?;
        }
        Ok(())
    }
}

/// The resource metadata (RFC 9728) membrane publishes.
#[derive(Debug, Clone, Default)]
pub struct ResourceMetadata {
    pub resource: Option<String>,
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
}

impl ResourceMetadata {
    /// The document, for an endpoint reached at `endpoint` (scheme, host and path).
    pub fn document(&self, endpoint: &str) -> serde_json::Value {
        let mut document = serde_json::json!({
            "resource": self.resource.as_deref().unwrap_or(endpoint),
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "membrane",
        });
        if !self.scopes_supported.is_empty() {
            document["scopes_supported"] = self.scopes_supported.clone().into();
        }
        document
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        crate::transport::tls::http_client(&Default::default())
            .unwrap()
            .build()
            .unwrap()
    }

    fn with_tokens(text: &str) -> Authenticator {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).unwrap();
        let config = AuthConfig {
            bearer_tokens_file: Some(path),
            ..AuthConfig::default()
        };
        Authenticator::new(&config, client()).unwrap()
    }

    #[tokio::test]
    async fn bearer_tokens_are_checked() {
        let auth = with_tokens("0123456789abcdef alice mcp\n");
        let alice = auth
            .authenticate(Some("Bearer 0123456789abcdef"))
            .await
            .unwrap();
        assert_eq!(alice.subject, "alice");
        assert_eq!(
            auth.authenticate(Some("bearer  0123456789abcdef "))
                .await
                .unwrap()
                .subject,
            "alice",
            "the scheme is case-insensitive"
        );
        assert_eq!(auth.authenticate(None).await, Err(AuthError::Missing));
        assert!(matches!(
            auth.authenticate(Some("Basic YWxpY2U6cHc=")).await,
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            auth.authenticate(Some("Bearer nope-nope-nope-nope")).await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn auth_needs_a_way_to_check_tokens() {
        let error = Authenticator::new(&AuthConfig::default(), client())
            .err()
            .unwrap();
        assert!(error.contains("bearer_tokens_file"), "{error}");
    }

    #[test]
    fn metadata_names_the_resource_and_its_servers() {
        let metadata = ResourceMetadata {
            resource: None,
            authorization_servers: vec!["https://auth.example".into()],
            scopes_supported: vec!["mcp".into()],
        };
        let document = metadata.document("https://mcp.example/mcp");
        assert_eq!(document["resource"], "https://mcp.example/mcp");
        assert_eq!(document["authorization_servers"][0], "https://auth.example");
        assert_eq!(document["scopes_supported"][0], "mcp");
    }
}
