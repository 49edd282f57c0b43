//! An authorization server's signing keys, made by the test: RS256 (rsa), ES256 and EdDSA
//! (rcgen), their public JWKs, and access tokens signed with them (jsonwebtoken).

use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// One signing key with its key id.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    pub fn generate(alg: Algorithm, kid: &str) -> Self {
        let (encoding, jwk) = match alg {
            Algorithm::RS256 => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
                let der = key.to_pkcs1_der().unwrap();
                let encoding = EncodingKey::from_rsa_der(der.as_bytes());
                let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap();
                (encoding, serde_json::to_value(jwk).unwrap())
            }
            Algorithm::ES256 => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                let raw = pair.public_key_raw();
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
                (EncodingKey::from_ec_der(pair.serialized_der()), jwk)
            }
            Algorithm::EdDSA => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key_raw())});
                (EncodingKey::from_ed_der(pair.serialized_der()), jwk)
            }
            other => panic!("no test key for {other:?}"),
        };
        let mut jwk = jwk;
        jwk["kid"] = kid.into();
        jwk["use"] = "sig".into();
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
        }
    }

    /// The public half as a JWK.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// A token with these claims, signed with this key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// A JWK set of these keys.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|key| key.jwk()).collect::<Vec<_>>() })
}

/// Claims of an access token for `subject`, valid for an hour.
pub fn claims(issuer: &str, audience: &str, subject: &str, scope: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({"iss": issuer, "aud": audience, "sub": subject, "scope": scope, "iat": now, "exp": now + 3600})
}
