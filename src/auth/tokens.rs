//! [`StaticTokens`]: bearer tokens listed in a file, one per line, for deployments without an
//! authorization server. Only their SHA-256 digests are kept in memory, and a presented token
//! is compared with every one of them in constant time, so neither memory nor timing gives a
//! token away.
//!
//! ```text
//! # TOKEN [SUBJECT [SCOPE ...]]
//! 3f9c0d5e8a7b41c2...            (subject: token:<digest prefix>, no scopes)
//! b71e44c0aa39...  ci-bot  mcp:tools mcp:read
//! ```

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Principal;

/// The tokens of one file, hashed.
#[derive(Debug, Default)]
pub struct StaticTokens {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    principal: std::sync::Arc<Principal>,
}

/// The issuer recorded on principals authenticated by a static token.
pub const STATIC_ISSUER: &str = "membrane:static-token";

impl StaticTokens {
    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read bearer_tokens_file {}: {e}", path.display()))?;
        let tokens = Self::parse(&text)?;
        if tokens.entries.is_empty() {
            return Err(format!(
                "bearer_tokens_file {} lists no token",
                path.display()
            ));
        }
        Ok(tokens)
    }

    /// Parses the file's text: a token per line, optionally followed by a subject and scopes;
    /// blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let mut words = line.split_whitespace();
            let Some(token) = words.next().filter(|word| !word.starts_with('#')) else {
                continue;
            };
            if token.len() < 16 {
                return Err(format!(
                    "line {}: a bearer token needs at least 16 characters",
                    number + 1
                ));
            }
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            let subject = match words.next() {
                Some(subject) => subject.to_owned(),
                None => format!("token:{}", hex_prefix(&digest)),
            };
            let principal = Principal {
                subject,
                issuer: Some(STATIC_ISSUER.into()),
                scopes: words.map(str::to_owned).collect(),
                claims: serde_json::Map::new(),
            };
            entries.push(Entry {
                digest,
                principal: principal.into(),
            });
        }
        Ok(Self { entries })
    }

    /// The principal a token stands for, compared against every listed token in constant time.
    pub fn verify(&self, token: &str) -> Option<std::sync::Arc<Principal>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry.principal.clone());
            }
        }
        found
    }
}

fn hex_prefix(digest: &[u8; 32]) -> String {
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_principal_and_scopes() {
        let tokens = StaticTokens::parse(
            "# comment\n\n0123456789abcdef\nfedcba9876543210fedc  ci-bot  mcp:tools mcp:read\n",
        )
        .unwrap();
        let anonymous = tokens.verify("0123456789abcdef").unwrap();
        assert!(anonymous.subject.starts_with("token:"));
        assert!(anonymous.scopes.is_empty());
        let bot = tokens.verify("fedcba9876543210fedc").unwrap();
        assert_eq!(bot.subject, "ci-bot");
        assert_eq!(bot.scopes.len(), 2);
        assert!(tokens.verify("0123456789abcdeF").is_none());
        assert!(tokens.verify("").is_none());
        assert!(
            !format!("{tokens:?}").contains("0123456789abcdef"),
            "only digests are kept"
        );
    }

    #[test]
    fn short_tokens_are_refused() {
        let error = StaticTokens::parse("short\n").unwrap_err();
        assert!(error.contains("line 1"), "{error}");
    }
}
