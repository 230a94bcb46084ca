//! An HTTP proxy in front of a registry that breaks a bounded number of requests: it drops
//! the connection after reading the request (a reset to the client) or answers 500. Requests
//! are relayed one at a time, so faults hit every kind of request, not just new connections.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

pub struct FaultProxy {
    pub addr: String,
    /// Faults injected so far.
    pub injected: Arc<AtomicUsize>,
    /// Requests seen so far.
    pub requests: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// Relays to `upstream`; of every three requests two fail, until `faults` have failed.
    pub fn start(upstream: &str, faults: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let injected = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (inj, req) = (injected.clone(), requests.clone());
        let upstream = upstream.to_string();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (inj, req, upstream) = (inj.clone(), req.clone(), upstream.clone());
                thread::spawn(move || {
                    let _ = serve(conn, &upstream, faults, &inj, &req);
                });
            }
        });
        Self {
            addr,
            injected,
            requests,
        }
    }
}

struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
}

/// Reads a request or response head and its Content-Length body (none for HEAD responses).
fn read_message(r: &mut impl BufRead, head_only_body: bool) -> std::io::Result<Option<Message>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
        if head.len() > 64 * 1024 || (head.len() == line.len() && !line.is_ascii()) {
            return Ok(None); // not HTTP (e.g. a TLS hello)
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; if head_only_body { 0 } else { len }];
    r.read_exact(&mut body)?;
    Ok(Some(Message { head, body }))
}

fn serve(
    client: TcpStream,
    upstream: &str,
    faults: usize,
    injected: &AtomicUsize,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client;
    let server = TcpStream::connect(upstream)?;
    let mut server_reader = BufReader::new(server.try_clone()?);
    let mut server_writer = server;
    while let Some(request) = read_message(&mut reader, false)? {
        let n = requests.fetch_add(1, Ordering::SeqCst);
        let done = injected.load(Ordering::SeqCst);
        if done < faults && n % 3 != 2 {
            injected.fetch_add(1, Ordering::SeqCst);
            if done % 2 == 1 {
                writer.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            }
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
        let is_head = request.head.starts_with(b"HEAD ");
        server_writer.write_all(&request.head)?;
        server_writer.write_all(&request.body)?;
        let Some(response) = read_message(&mut server_reader, is_head)? else {
            return Ok(());
        };
        writer.write_all(&response.head)?;
        writer.write_all(&response.body)?;
    }
    Ok(())
}
