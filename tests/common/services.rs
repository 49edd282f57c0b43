//! Real services the durable-session tests run beside membrane, each started on a loopback
//! port in a temporary directory and stopped by its pid: `redis-server`, and `nginx` as the
//! round-robin load balancer in front of replicas.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use super::http::{Background, free_port, wait_until_listening};

/// A program the tests need from the system; `scripts/test.sh` installs it.
fn system_program(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] {
        let path = PathBuf::from(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is not installed: scripts/test.sh installs it (apt-get install {name})");
}

/// A `redis-server` of its own, without persistence.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    server: Option<Background>,
}

impl Redis {
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            server: None,
        };
        redis.restart().await;
        redis
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops the server (SIGKILL, as a crash or an outage would).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill().await;
        }
    }

    /// Starts it (again) on its port, empty.
    pub async fn restart(&mut self) {
        self.stop().await;
        let port = self.port.to_string();
        let server = Background::spawn(
            Command::new(system_program("redis-server"))
                .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "no", "--protected-mode", "yes"])
                .arg("--dir")
                .arg(self.dir.path()),
        );
        wait_until_listening(self.port).await;
        self.server = Some(server);
    }

    /// A connection for the test's own checks.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// `nginx` balancing requests round-robin over `backends` (`127.0.0.1:PORT`), with SSE
/// passed through unbuffered; its URL is `/mcp` on its own port.
pub struct Balancer {
    pub url: String,
    _dir: tempfile::TempDir,
    _nginx: Background,
}

impl Balancer {
    pub async fn start(backends: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let servers: String = backends
            .iter()
            .map(|backend| format!("server {backend};\n"))
            .collect();
        let conf = format!(
            "master_process off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{}}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {dir};\nproxy_temp_path {dir};\n\
             fastcgi_temp_path {dir};\nuwsgi_temp_path {dir};\nscgi_temp_path {dir};\n\
             upstream membranes {{\n{servers}}}\n\
             server {{\nlisten 127.0.0.1:{port};\nlocation / {{\nproxy_pass http://membranes;\n\
             proxy_http_version 1.1;\nproxy_set_header Connection \"\";\nproxy_set_header Host $http_host;\nproxy_buffering off;\n\
             proxy_read_timeout 60s;\n}}\n}}\n}}\n",
            dir = dir.path().display()
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let nginx = Background::spawn(
            Command::new(system_program("nginx"))
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&path)
                .args(["-g", "daemon off;"]),
        );
        wait_until_listening(port).await;
        Self {
            url: format!("http://127.0.0.1:{port}/mcp"),
            _dir: dir,
            _nginx: nginx,
        }
    }
}

/// Waits (bounded) until `check` holds.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 10 s");
}

/// The URL logged after `marker` in the log file `log` (up to the next whitespace), once it is
/// there.
pub async fn logged_url(log: &std::path::Path, marker: &str) -> String {
    for _ in 0..100 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(url) = super::http::url_after(&text, marker) {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never logged {marker:?}", log.display());
}
