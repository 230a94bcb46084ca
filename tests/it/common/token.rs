//! A Bearer-token server for a registry configured with `auth: token:`: it checks Basic
//! credentials and issues RS256 JWTs (signed with openssl) granting the requested scopes.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use base64::Engine;

use super::sh;

pub const SERVICE: &str = "imgbuild-test-registry";
pub const ISSUER: &str = "imgbuild-test-issuer";

pub struct TokenServer {
    pub realm: String,
    /// The certificate the registry must trust (`rootcertbundle`).
    pub cert: PathBuf,
    /// Tokens issued so far.
    pub issued: Arc<AtomicUsize>,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenServer {
    pub fn start(dir: &Path, user: &'static str, password: &'static str) -> Self {
        sh(&format!(
            "cd {} && openssl req -x509 -newkey rsa:2048 -nodes -keyout token.key -out token.crt -days 2 -subj /CN=imgbuild-token-signer 2>/dev/null \
             && openssl x509 -in token.crt -outform DER -out token.der",
            dir.display()
        ));
        let key = dir.join("token.key");
        let x5c = base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(dir.join("token.der")).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let issued = Arc::new(AtomicUsize::new(0));
        let counter = issued.clone();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut authorized = false;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = h.split_once(':') {
                        if name.eq_ignore_ascii_case("authorization") && value.trim() == expected {
                            authorized = true;
                        }
                    }
                }
                let mut stream = stream;
                if !authorized {
                    let _ = stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let url = url::Url::parse(&format!("http://x{target}")).unwrap();
                let access: Vec<serde_json::Value> = url
                    .query_pairs()
                    .filter(|(k, _)| k == "scope")
                    .flat_map(|(_, v)| {
                        v.split(' ')
                            .filter_map(|scope| {
                                let mut parts = scope.splitn(3, ':');
                                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                    "iat": now, "jti": format!("t{}", counter.load(Ordering::SeqCst)), "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    b64url(&serde_json::to_vec(&header).unwrap()),
                    b64url(&serde_json::to_vec(&claims).unwrap())
                );
                let signature = sign(&key, signing_input.as_bytes());
                let token = format!("{signing_input}.{}", b64url(&signature));
                counter.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            realm,
            cert: dir.join("token.crt"),
            issued,
        }
    }
}

fn sign(key: &Path, data: &[u8]) -> Vec<u8> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap().stdout
}
