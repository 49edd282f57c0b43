//! membrane as an OAuth resource server in front of MCP servers: clients of every SDK with a
//! token get through, others get 401 and the way to the authorization server; JWT access
//! tokens are checked against an authorization server's key set that rotates; scopes gate
//! methods and tools; a session belongs to its caller; the client's token never reaches the
//! upstream, which gets its own credentials; plugins see who calls; a foreign `Host` and an
//! exposed listener without authentication are refused.

mod common;

use std::sync::{Arc, Mutex};

use common::http::{Http, python_http_server};
use common::jwt::{SigningKey, claims, jwks};
use common::{initialize_params, plugin, rmcp_server, tool_text};
use jsonwebtoken::Algorithm;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789ab";

/// A token file: alice may use tools, bob may not.
fn tokens(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("tokens");
    std::fs::write(
        &path,
        format!("# test tokens\n{ALICE} alice mcp tools\n{BOB} bob mcp\n"),
    )
    .unwrap();
    path
}

/// membrane with static tokens (the file beside its config) in front of the rmcp server over
/// stdio, and `extra` config.
async fn with_tokens(extra: &str) -> (tempfile::TempDir, common::http::Background, String) {
    let toml = format!(
        "[auth]\nbearer_tokens_file = \"tokens\"\nrequired_scopes = [\"mcp\"]\nscopes_supported = [\"mcp\", \"tools\"]\nauthorization_servers = [\"https://auth.example\"]\n{extra}"
    );
    rmcp_behind_reverse(&toml, tokens).await
}

/// membrane with `toml` in front of the rmcp server over stdio, after `prepare` wrote what the
/// config names into its directory.
async fn rmcp_behind_reverse(
    toml: &str,
    prepare: impl FnOnce(&std::path::Path) -> std::path::PathBuf,
) -> (tempfile::TempDir, common::http::Background, String) {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let config = common::write_config(dir.path(), toml);
    let server = rmcp_server();
    let (membrane, url) = common::http::membrane_reverse(&[
        "--config",
        config.to_str().unwrap(),
        "--",
        server.to_str().unwrap(),
    ])
    .await;
    (dir, membrane, url)
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": initialize_params("2025-06-18")})
}

#[tokio::test]
async fn clients_need_a_token_and_are_told_where_to_get_one() {
    let (_dir, _membrane, url) = with_tokens("").await;
    let anonymous = Http::new(&url);
    let refused = anonymous.post(&initialize()).await;
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let origin = url.trim_end_matches("/mcp");
    assert_eq!(
        challenge,
        format!("Bearer resource_metadata=\"{origin}/.well-known/oauth-protected-resource/mcp\"")
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32003, "{body}");

    let wrong = anonymous.as_bearer(Some("not-a-token-at-all-really"));
    let refused = wrong.post(&initialize()).await;
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");

    // The resource metadata (RFC 9728) names the authorization server and scopes.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let metadata: Value = anonymous
            .client
            .get(format!("{origin}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(metadata["resource"], url);
        assert_eq!(
            metadata["authorization_servers"],
            json!(["https://auth.example"])
        );
        assert_eq!(metadata["scopes_supported"], json!(["mcp", "tools"]));
    }

    // With a token, the session works, and belongs to its caller.
    let mut alice = anonymous.as_bearer(Some(ALICE));
    alice.initialize().await;
    let answer = alice.call_tool(1, "echo", json!({"message": "hi"})).await;
    assert_eq!(tool_text(&answer), "hi");
    let bob = alice.as_bearer(Some(BOB));
    assert_eq!(
        bob.post(&json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
            .await
            .status(),
        404
    );
    assert_eq!(bob.delete().await.status(), 404, "nor can bob end it");
    assert_eq!(anonymous.as_bearer(None).get(None).await.status(), 401);
    let answer = alice
        .call_tool(3, "echo", json!({"message": "still mine"}))
        .await;
    assert_eq!(tool_text(&answer), "still mine");
}

#[tokio::test]
async fn every_sdk_client_gets_through_with_a_token() {
    let (_dir, _membrane, url) = with_tokens("").await;
    // rmcp, with the token on every request.
    common::tls_provider();
    let config = StreamableHttpClientTransportConfig::with_uri(url.as_str()).auth_header(ALICE);
    let client = ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    let result = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(json!({"message": "from rmcp"}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(result.content[0].as_text().unwrap().text, "from rmcp");
    client.cancel().await.unwrap();
    // Without one, rmcp sees the challenge.
    let refused = ().serve(StreamableHttpClientTransport::from_uri(url.as_str())).await;
    let Err(error) = refused else {
        panic!("a client without a token was let in")
    };
    let error = format!("{error:?}");
    assert!(error.contains("resource_metadata"), "{error}");

    // The Python SDK.
    let args = [
        "call",
        "--tool",
        "echo",
        "--args",
        r#"{"message":"from python"}"#,
    ];
    let args = [&args[..], &["--mode", "legacy", "--bearer", ALICE]].concat();
    let python = common::python_client(&args, &url, &[]).await;
    assert_eq!(python["call"]["text"], "from python", "{python}");

    // The TypeScript SDK.
    let typescript = common::typescript_client(&url, &[("MCP_BEARER", ALICE.as_ref())]).await;
    assert_eq!(
        typescript["echo"]["text"], "hello from typescript",
        "{typescript}"
    );
}

#[tokio::test]
async fn scopes_gate_methods_and_tools() {
    let extra = "[[auth.scopes]]\nmethods = [\"tools/call\"]\nscopes = [\"tools\"]\n[[auth.scopes]]\ntools = [\"delete_*\"]\nscopes = [\"admin\"]\n";
    let (_dir, _membrane, url) = with_tokens(extra).await;
    let mut alice = Http::new(&url).as_bearer(Some(ALICE));
    alice.initialize().await;
    assert_eq!(
        tool_text(&alice.call_tool(1, "echo", json!({"message": "ok"})).await),
        "ok"
    );
    let refused = alice
        .post(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete_file", "arguments": {"path": "/x"}}}))
        .await;
    assert_eq!(refused.status(), 403);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_scope\", scope=\"admin\""),
        "{challenge}"
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["id"], 2, "the error answers the request");

    let mut bob = Http::new(&url).as_bearer(Some(BOB));
    bob.initialize().await;
    let refused = bob.post(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "x"}}})).await;
    assert_eq!(refused.status(), 403, "bob lacks the tools scope");
    let listed = bob.request(4, "tools/list", json!({})).await;
    assert!(
        listed["result"]["tools"].is_array(),
        "other methods are bob's to use"
    );

    // A token without the scope every request needs cannot even open a session.
    let only_tools = |dir: &std::path::Path| {
        let path = dir.join("tokens");
        std::fs::write(&path, format!("{ALICE} alice tools\n")).unwrap();
        path
    };
    let toml = "[auth]\nbearer_tokens_file = \"tokens\"\nrequired_scopes = [\"mcp\"]\n";
    let (_dir2, _membrane2, url2) = rmcp_behind_reverse(toml, only_tools).await;
    let refused = Http::new(&url2)
        .as_bearer(Some(ALICE))
        .post(&initialize())
        .await;
    assert_eq!(refused.status(), 403);
}

/// A JWK set served the way an authorization server does, which the test can rotate.
struct KeyServer {
    url: String,
    keys: Arc<Mutex<Value>>,
    fetches: Arc<Mutex<usize>>,
}

async fn key_server(initial: Value) -> KeyServer {
    let keys = Arc::new(Mutex::new(initial));
    let fetches = Arc::new(Mutex::new(0));
    let (served, counted) = (keys.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (served, counted) = (served.clone(), counted.clone());
            async move {
                *counted.lock().unwrap() += 1;
                let body = served.lock().unwrap().to_string();
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    KeyServer { url, keys, fetches }
}

#[tokio::test]
async fn jwt_access_tokens_follow_a_rotating_key_set() {
    let issuer = "https://auth.example";
    let rsa = SigningKey::generate(Algorithm::RS256, "rsa-1");
    let ec = SigningKey::generate(Algorithm::ES256, "ec-1");
    let ed = SigningKey::generate(Algorithm::EdDSA, "ed-1");
    let keys = key_server(jwks(&[&rsa, &ec])).await;
    let audience = "https://mcp.example/mcp";
    let toml = format!(
        "[auth]\nresource = {audience:?}\n[auth.jwt]\nissuer = {issuer:?}\njwks_url = {:?}\njwks_cache_secs = 1\njwks_min_refresh_secs = 0\n",
        keys.url
    );
    let (_dir, _membrane, url) = rmcp_behind_reverse(&toml, |dir| dir.to_owned()).await;
    let works = |token: String| {
        let url = url.clone();
        async move {
            let client = Http::new(&url).as_bearer(Some(&token));
            client.post(&initialize()).await.status()
        }
    };
    let valid = claims(issuer, audience, "carol", "mcp");
    assert_eq!(works(rsa.sign(&valid)).await, 200, "RS256");
    assert_eq!(works(ec.sign(&valid)).await, 200, "ES256");
    assert_eq!(
        works(ed.sign(&valid)).await,
        401,
        "a key the set does not have yet"
    );

    // The authorization server rotates: the Ed25519 key comes, the RSA key goes.
    *keys.keys.lock().unwrap() = jwks(&[&ec, &ed]);
    assert_eq!(
        works(ed.sign(&valid)).await,
        200,
        "EdDSA, after a refresh for its unknown kid"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        works(rsa.sign(&valid)).await,
        401,
        "the retired key, once the cached set is old"
    );
    assert!(*keys.fetches.lock().unwrap() >= 2);

    // Tokens that must not pass.
    let mut expired = valid.clone();
    expired["exp"] = json!(1_000_000);
    let mut foreign = valid.clone();
    foreign["aud"] = json!("https://other.example/mcp");
    let mut forged = valid.clone();
    forged["iss"] = json!("https://evil.example");
    for (why, token) in [
        ("expired", ec.sign(&expired)),
        ("another audience", ec.sign(&foreign)),
        ("another issuer", ec.sign(&forged)),
        ("tampered", {
            let token = ec.sign(&valid);
            let (head, _) = token.rsplit_once('.').unwrap();
            format!("{head}.AAAA")
        }),
    ] {
        assert_eq!(works(token).await, 401, "{why}");
    }
}

#[tokio::test]
async fn plugins_see_who_calls() {
    let issuer = "https://auth.example";
    let key = SigningKey::generate(Algorithm::ES256, "k");
    let audience = "https://mcp.example/mcp";
    let toml = format!(
        "[auth]\nresource = {audience:?}\nclaims = [\"groups\"]\n[auth.jwt]\nissuer = {issuer:?}\njwks_file = \"jwks.json\"\n\
         [[plugins]]\npath = {:?}\n[plugins.config]\nonly = [{{ tools = [\"delete_*\"], claim = \"groups\", any_of = [\"ops\"] }}]\n",
        plugin("tool-guard").display().to_string()
    );
    let keys = jwks(&[&key]).to_string();
    let write_keys = |dir: &std::path::Path| {
        let path = dir.join("jwks.json");
        std::fs::write(&path, &keys).unwrap();
        path
    };
    let (_config, _membrane, url) = rmcp_behind_reverse(&toml, write_keys).await;
    let token = |subject: &str, groups: Value| {
        let mut claims = claims(issuer, audience, subject, "mcp");
        claims["groups"] = groups;
        key.sign(&claims)
    };
    let mut operator = Http::new(&url).as_bearer(Some(&token("olga", json!(["dev", "ops"]))));
    operator.initialize().await;
    let done = operator
        .call_tool(1, "delete_file", json!({"path": "/tmp/x"}))
        .await;
    assert_eq!(tool_text(&done), "deleted /tmp/x");
    let mut developer = Http::new(&url).as_bearer(Some(&token("dan", json!(["dev"]))));
    developer.initialize().await;
    let refused = developer
        .call_tool(1, "delete_file", json!({"path": "/tmp/x"}))
        .await;
    assert_eq!(refused["error"]["code"], -32001, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not for 'dan'")
    );
    let listed = developer.request(2, "tools/list", json!({})).await;
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"echo") && !names.contains(&"delete_file"),
        "{names:?}"
    );
}

#[tokio::test]
async fn the_clients_token_never_goes_upstream_and_configured_credentials_do() {
    let (upstream, upstream_url) = python_http_server(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("upstream-token");
    std::fs::write(&secret, "upstream-secret\n").unwrap();
    let toml = format!(
        "[auth]\nbearer_tokens_file = {:?}\n[http.upstream_headers]\nAuthorization = \"file:{}\"\nX-Api-Key = \"env:MEMBRANE_TEST_KEY\"\nX-Static = \"plain\"\n",
        tokens(dir.path()).display().to_string(),
        secret.display()
    );
    let config = common::write_config(dir.path(), &toml);
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--upstream",
        &upstream_url,
    ];
    let (_membrane, url) =
        common::http::membrane_reverse_with(&args, &[("MEMBRANE_TEST_KEY", "key-from-env")]).await;
    let mut alice = Http::new(&url).as_bearer(Some(ALICE));
    alice.initialize().await;
    let seen: Value =
        serde_json::from_str(tool_text(&alice.call_tool(1, "headers", json!({})).await)).unwrap();
    assert_eq!(seen["authorization"], "upstream-secret", "{seen}");
    assert_eq!(seen["x-api-key"], "key-from-env");
    assert_eq!(seen["x-static"], "plain");
    assert!(
        !seen.to_string().contains(ALICE),
        "the client's token stayed with membrane: {seen}"
    );
    drop(upstream);
}

#[tokio::test]
async fn a_foreign_host_is_refused_before_anything_else() {
    let (_dir, _membrane, url) = with_tokens("").await;
    let client = common::http_client();
    // A page on evil.example whose name was rebound to 127.0.0.1 sends its own Host.
    for host in ["evil.example", "evil.example:80", "localhost.evil.example"] {
        let refused = client
            .post(&url)
            .header("host", host)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(initialize().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(
            refused.status(),
            403,
            "{host}: before authentication (not 401)"
        );
    }
    let metadata = client
        .get(url.replace("/mcp", "/.well-known/oauth-protected-resource"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), 403);
}

#[tokio::test]
async fn an_exposed_listener_needs_authentication_or_an_explicit_waiver() {
    // Binding every interface happens in a private network namespace, as root.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a private network namespace");
        return;
    }
    let membrane = common::membrane();
    let server = rmcp_server();
    let run = |extra: &str, config: &str| {
        let script = format!(
            "ip link set lo up; cat > /tmp/membrane-exposed-$$.toml <<'EOF'\n{config}\nEOF\n\
             timeout 5 {membrane} reverse --listen 0.0.0.0:18080 --config /tmp/membrane-exposed-$$.toml {extra} -- {} ; echo exit=$?; rm -f /tmp/membrane-exposed-$$.toml",
            server.display()
        );
        async move {
            let output = tokio::process::Command::new("unshare")
                .args(["-n", "sh", "-c", &script])
                .env("XDG_CACHE_HOME", common::cache_home())
                .output()
                .await
                .unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        }
    };
    let refused = run("", "").await;
    assert!(
        refused.contains("refusing to listen on 0.0.0.0:18080 without [auth]"),
        "{refused}"
    );
    assert!(refused.contains("exit=1"), "{refused}");
    let no_hosts = run("--allow-unauthenticated", "").await;
    assert!(no_hosts.contains("allowed_hosts"), "{no_hosts}");
    let waived = run(
        "--allow-unauthenticated",
        "[http]\nallowed_hosts = [\"mcp.internal\"]",
    )
    .await;
    assert!(waived.contains("WITHOUT authentication"), "{waived}");
    assert!(
        waived.contains("listening on http://0.0.0.0:18080/mcp"),
        "{waived}"
    );
    assert!(
        waived.contains("exit=124"),
        "it served until the timeout: {waived}"
    );
}
