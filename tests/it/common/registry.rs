//! Real registries (Debian's `docker-registry`, the CNCF distribution server) on 127.0.0.1,
//! one process per test, configured by files the test writes.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::sh;

#[derive(Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a certificate signed by a CA made for this registry.
    pub tls: bool,
    /// Serve HTTPS with Docker's documented one-command self-signed certificate (`openssl req
    /// -x509 … -addext subjectAltName=…`: CA:TRUE, its own leaf); `ca` is that certificate.
    pub self_signed: bool,
    /// With `tls`: require a client certificate signed by a client CA made for this registry
    /// (distribution's `http.tls.clientcas`); `client_cert` is one it accepts.
    pub client_certs: bool,
    /// Require Basic auth with this user and password (htpasswd, bcrypt).
    pub htpasswd: Option<(&'static str, &'static str)>,
    /// Require Bearer tokens from a token server that accepts this user and password.
    pub token_auth: Option<(&'static str, &'static str)>,
}

pub struct Registry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: tempfile::TempDir,
    child: Child,
    /// The CA certificate that signed the registry's certificate (with `tls`).
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM files) the registry accepts (with `client_certs`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The token server (with `token_auth`).
    pub tokens: Option<super::token::TokenServer>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start(options: RegistryOptions) -> Self {
        assert!(
            Command::new("docker-registry")
                .arg("--version")
                .output()
                .is_ok(),
            "docker-registry is missing: apt-get install docker-registry"
        );
        let dir = tempfile::Builder::new()
            .prefix("imgbuild-registry-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            d.join("data").display()
        );
        let mut ca = None;
        if options.tls {
            sh(&format!(
                "cd {} && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=imgbuild-test-ca 2>/dev/null \
                 && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null \
                 && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext.cnf \
                 && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf 2>/dev/null",
                d.display()
            ));
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            ));
            ca = Some(d.join("ca.crt"));
        }
        let mut client_cert = None;
        if options.client_certs {
            assert!(options.tls, "client certificates need tls");
            sh(&format!(
                "cd {} && openssl req -x509 -newkey rsa:2048 -nodes -keyout client-ca.key -out client-ca.crt -days 2 -subj /CN=imgbuild-test-client-ca 2>/dev/null \
                 && openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=ci-runner 2>/dev/null \
                 && printf 'extendedKeyUsage=clientAuth\\n' > client-ext.cnf \
                 && openssl x509 -req -in client.csr -CA client-ca.crt -CAkey client-ca.key -CAcreateserial -out client.cert -days 2 -extfile client-ext.cnf 2>/dev/null",
                d.display()
            ));
            config.push_str(&format!(
                "    clientcas:\n      - {}\n",
                d.join("client-ca.crt").display()
            ));
            client_cert = Some((d.join("client.cert"), d.join("client.key")));
        }
        if options.self_signed {
            sh(&format!(
                "cd {} && openssl req -x509 -newkey rsa:2048 -nodes -keyout domain.key -out domain.crt -days 2 \
                 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null",
                d.display()
            ));
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("domain.crt").display(),
                d.join("domain.key").display()
            ));
            ca = Some(d.join("domain.crt"));
        }
        if let Some((user, pass)) = options.htpasswd {
            sh(&format!(
                "htpasswd -Bbn {user} {pass} > {}",
                d.join("htpasswd").display()
            ));
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: imgbuild-test\n    path: {}\n",
                d.join("htpasswd").display()
            ));
        }
        let mut tokens = None;
        if let Some((user, pass)) = options.token_auth {
            let server = super::token::TokenServer::start(d, user, pass);
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                server.realm,
                super::token::SERVICE,
                super::token::ISSUER,
                server.cert.display()
            ));
            tokens = Some(server);
        }
        std::fs::write(d.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let registry = Self {
            addr,
            dir,
            child,
            ca,
            client_cert,
            tokens,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("registry on {} did not start:\n{}", self.addr, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Access-log lines containing `needle` (e.g. `"PUT /v2/app/blobs/uploads/`).
    pub fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
