//! Certificates made by the test itself (rcgen, nothing fetched): a certificate authority and
//! the server and client certificates it signs, written as PEM files into a directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority whose certificate is `<dir>/<name>-ca.pem`.
pub struct Ca {
    name: String,
    dir: PathBuf,
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let ca = Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            params,
            key,
        };
        std::fs::write(ca.cert(), cert.pem()).unwrap();
        ca
    }

    /// The CA certificate's PEM file.
    pub fn cert(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A server certificate for `localhost` and `127.0.0.1`: its PEM file and its key's.
    pub fn server(&self, name: &str) -> (PathBuf, PathBuf) {
        self.leaf(
            name,
            ExtendedKeyUsagePurpose::ServerAuth,
            &["localhost", "127.0.0.1"],
        )
    }

    /// A client certificate: its PEM file and its key's.
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        self.leaf(name, ExtendedKeyUsagePurpose::ClientAuth, &[])
    }

    fn leaf(
        &self,
        name: &str,
        usage: ExtendedKeyUsagePurpose,
        names: &[&str],
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}
