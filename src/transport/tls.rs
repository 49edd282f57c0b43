//! TLS for both sides, with rustls on the `ring` provider. [`ServerTls`] is the listener's:
//! a certificate and key read from PEM files, swapped in whole by [`ServerTls::reload`] (a
//! SIGHUP or a change of the files) without touching open connections, which keep the
//! certificate they started with. [`client_config`] is the upstream side's: the system's root
//! certificates plus any extra PEM roots, and an optional client certificate. Failures say which
//! file and which check.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The crypto provider membrane uses everywhere. Installed as the process default too, so
/// that libraries building their own TLS clients find one.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |reason: String| TlsError::Read {
        what: "certificates",
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(read_error("no PEM certificate in it".into()));
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        what: "a private key",
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The listener's certificate, reloadable.
#[derive(Debug)]
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerTls {
    /// Reads the certificate chain and key (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = provider();
        let current = certified_key(&provider, cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(current),
            provider,
        }))
    }

    /// Reads the files again; on any error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = certified_key(&self.provider, &self.cert, &self.key)?;
        self.current.store(Arc::new(fresh));
        Ok(())
    }

    /// A rustls server configuration that serves whatever certificate is current (HTTP/1.1).
    pub fn config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for ServerTls {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified_key(
    provider: &rustls::crypto::CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert)?;
    let key = private_key(key)?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        TlsError::Invalid(format!(
            "the key in the [tls] key file does not fit the certificate in {}: {e}",
            cert.display()
        ))
    })?;
    Ok(certified)
}

/// How membrane checks the upstream servers it connects to over https.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsOptions {
    /// Extra root certificates (PEM), trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain and its key (PEM), for servers that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A rustls client configuration: system roots plus `ca_file`, and the client certificate.
pub fn client_config(options: &ClientTlsOptions) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::debug!("skipping a system root certificate: {error}");
    }
    let (added, _ignored) = roots.add_parsable_certificates(system.certs);
    tracing::debug!(roots = added, "loaded the system's root certificates");
    if let Some(ca_file) = &options.ca_file {
        for certificate in certificates(ca_file)? {
            roots.add(certificate).map_err(|e| {
                TlsError::Invalid(format!(
                    "a certificate in ca_file {} is not a usable root: {e}",
                    ca_file.display()
                ))
            })?;
        }
    }
    if roots.is_empty() {
        tracing::warn!(
            "no root certificate is trusted: https upstreams will fail; set [http] ca_file"
        );
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .with_root_certificates(roots);
    let mut config = match &options.client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| {
                TlsError::Invalid(format!("the client certificate {}: {e}", cert.display()))
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A hint for an error chain whose certificate check failed in a way rustls names tersely.
pub fn certificate_hint(error_text: &str) -> Option<&'static str> {
    if error_text.contains("UnknownIssuer") {
        Some(
            "the upstream's certificate is not signed by a trusted authority: add its CA to [http] ca_file",
        )
    } else if error_text.contains("CertificateRequired") {
        Some("the upstream asks for a client certificate: set [http] client_cert and client_key")
    } else if error_text.contains("close_notify") {
        Some(
            "the upstream dropped the TLS connection; if it asks for a client certificate, set [http] client_cert and client_key",
        )
    } else {
        None
    }
}

/// An HTTP client builder with membrane's TLS settings and no redirects (a POST must never be
/// sent on to another address), TCP_NODELAY set.
pub fn http_client(options: &ClientTlsOptions) -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(client_config(options)?)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true))
}
