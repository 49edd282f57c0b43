//! TLS on both sides: membrane serving https to clients of every SDK while it reaches an https
//! upstream that only a private CA vouches for; certificate problems named in the error a
//! client gets; a client certificate for upstreams that ask; the listener's certificate
//! replaced on SIGHUP without dropping the connections that use the old one. Every
//! certificate is made by the test.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::http::{Background, Http, membrane_reverse, python_http_server};
use common::pki::Ca;
use common::{tool_text, write_config};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

/// A client that trusts only `ca`.
fn client_trusting(ca: &Path) -> reqwest::Client {
    common::tls_provider();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap()
}

/// The Python SDK server over https with `cert` and `key`, and the extra `flags`.
async fn https_upstream(cert: &Path, key: &Path, flags: &[&str]) -> (Background, String) {
    let mut args = vec!["--tls", cert.to_str().unwrap(), key.to_str().unwrap()];
    args.extend(flags);
    let (server, url) = python_http_server(&args).await;
    (server, url.replace("http://", "https://"))
}

/// membrane reverse with `toml` (written into `dir`) in front of `upstream`.
async fn membrane_with(dir: &Path, toml: &str, upstream: &str) -> (Background, String) {
    let config = write_config(dir, toml);
    membrane_reverse(&["--config", config.to_str().unwrap(), "--upstream", upstream]).await
}

#[tokio::test]
async fn tls_on_both_sides_with_every_sdk_client() {
    let dir = tempfile::tempdir().unwrap();
    let front = Ca::new(dir.path(), "front");
    let back = Ca::new(dir.path(), "back");
    let (cert, key) = front.server("membrane");
    let (upstream_cert, upstream_key) = back.server("upstream");
    let (_upstream, upstream_url) = https_upstream(&upstream_cert, &upstream_key, &[]).await;
    let toml = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n[http]\nca_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string(),
        back.cert().display().to_string()
    );
    let (_membrane, url) = membrane_with(dir.path(), &toml, &upstream_url).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // A raw client that trusts the front CA only.
    let mut raw = Http::with_client(&url, client_trusting(&front.cert()));
    raw.initialize().await;
    assert_eq!(
        tool_text(&raw.call_tool(1, "echo", json!({"message": "raw"})).await),
        "raw"
    );
    // A client that trusts nothing of ours cannot connect at all.
    let untrusting = Http::new(&url);
    let failed = untrusting.client.post(&url).body("{}").send().await;
    assert!(failed.is_err(), "the front's certificate is checked");

    // rmcp, with an HTTP client that trusts the front CA.
    let transport = StreamableHttpClientTransport::with_client(
        client_trusting(&front.cert()),
        StreamableHttpClientTransportConfig::with_uri(url.as_str()),
    );
    let client = ().serve(transport).await.unwrap();
    let result = client
        .call_tool(
            CallToolRequestParams::new("echo").with_arguments(
                json!({"message": "rmcp over tls"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(result.content[0].as_text().unwrap().text, "rmcp over tls");
    client.cancel().await.unwrap();

    // The Python SDK, trusting the front CA through SSL_CERT_FILE.
    let args = [
        "call",
        "--tool",
        "echo",
        "--args",
        r#"{"message":"python over tls"}"#,
    ];
    let args = [&args[..], &["--mode", "legacy"]].concat();
    let ca = front.cert();
    let python = common::python_client(&args, &url, &[("SSL_CERT_FILE", ca.as_os_str())]).await;
    assert_eq!(python["call"]["text"], "python over tls", "{python}");

    // The TypeScript SDK, trusting it through NODE_EXTRA_CA_CERTS.
    let typescript =
        common::typescript_client(&url, &[("NODE_EXTRA_CA_CERTS", ca.as_os_str())]).await;
    assert_eq!(
        typescript["echo"]["text"], "hello from typescript",
        "{typescript}"
    );
}

#[tokio::test]
async fn upstream_certificate_problems_are_named_and_client_certificates_offered() {
    let dir = tempfile::tempdir().unwrap();
    let back = Ca::new(dir.path(), "back");
    let (upstream_cert, upstream_key) = back.server("upstream");
    let clients = Ca::new(dir.path(), "clients");
    let (client_cert, client_key) = clients.client("membrane-client");
    let (_upstream, upstream_url) = https_upstream(&upstream_cert, &upstream_key, &[]).await;

    // Without the upstream's CA: the error says which check failed, and what to do.
    let (_membrane, url) = membrane_with(dir.path(), "", &upstream_url).await;
    let answer = failed_initialize(&url).await;
    let message = answer["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(answer["error"]["code"], -32002, "{answer}");
    assert!(
        message.contains("UnknownIssuer") && message.contains("ca_file"),
        "{message}"
    );

    // An upstream that demands a client certificate.
    let sub = tempfile::tempdir().unwrap();
    let (_picky, picky_url) = https_upstream(
        &upstream_cert,
        &upstream_key,
        &["--client-ca", clients.cert().to_str().unwrap()],
    )
    .await;
    let trusting = format!(
        "[http]\nca_file = {:?}\n",
        back.cert().display().to_string()
    );
    let (_without, url) = membrane_with(sub.path(), &trusting, &picky_url).await;
    let answer = failed_initialize(&url).await;
    assert_eq!(
        answer["error"]["code"], -32002,
        "no client certificate: {answer}"
    );
    let sub = tempfile::tempdir().unwrap();
    let with_cert = format!(
        "{trusting}client_cert = {:?}\nclient_key = {:?}\n",
        client_cert.display().to_string(),
        client_key.display().to_string()
    );
    let (_with, url) = membrane_with(sub.path(), &with_cert, &picky_url).await;
    let mut client = Http::new(&url);
    assert!(client.initialize().await["result"].is_object());
    assert_eq!(
        tool_text(
            &client
                .call_tool(1, "echo", json!({"message": "mtls"}))
                .await
        ),
        "mtls"
    );
}

/// The answer to an initialize request that the upstream cannot take (no session comes of it).
async fn failed_initialize(url: &str) -> serde_json::Value {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": common::initialize_params("2025-06-18")});
    let response = Http::new(url).post(&init).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("mcp-session-id").is_none());
    response.json().await.unwrap()
}

/// The certificate a fresh TLS connection to `url` is served.
async fn served_certificate(url: &str, ca: &Path) -> CertificateDer<'static> {
    common::tls_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let address = url.trim_start_matches("https://").trim_end_matches("/mcp");
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test]
async fn the_listener_certificate_reloads_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let front = Ca::new(dir.path(), "front");
    let (first_cert, first_key) = front.server("first");
    let (second_cert, second_key) = front.server("second");
    let (cert, key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(&first_cert, &cert).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let server = common::rmcp_server();
    let toml = "[tls]\ncert = \"live.pem\"\nkey = \"live.key\"\n";
    let config = write_config(dir.path(), toml);
    let (membrane, url) = membrane_reverse(&[
        "--config",
        config.to_str().unwrap(),
        "--",
        server.to_str().unwrap(),
    ])
    .await;
    let first = CertificateDer::from_pem_file(&first_cert).unwrap();
    assert_eq!(served_certificate(&url, &front.cert()).await, first);
    let mut session = Http::with_client(&url, client_trusting(&front.cert()));
    session.initialize().await;

    // A deploy replaces the files by renaming finished copies into place.
    std::fs::copy(&second_key, dir.path().join("next.key")).unwrap();
    std::fs::copy(&second_cert, dir.path().join("next.pem")).unwrap();
    std::fs::rename(dir.path().join("next.key"), &key).unwrap();
    std::fs::rename(dir.path().join("next.pem"), &cert).unwrap();
    let second = CertificateDer::from_pem_file(&second_cert).unwrap();
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while served_certificate(&url, &front.cert()).await != second {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The session, on its kept-alive connection, goes on.
    let answer = session
        .call_tool(1, "echo", json!({"message": "after the swap"}))
        .await;
    assert_eq!(tool_text(&answer), "after the swap");

    // A broken replacement is refused; the certificate in use stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    let pid = membrane.pid().to_string();
    tokio::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    membrane
        .log
        .wait_for("TLS certificate not reloaded", 1)
        .await;
    assert_eq!(served_certificate(&url, &front.cert()).await, second);
}
