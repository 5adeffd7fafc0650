//! A scripted HTTP/1.1 server on loopback for the remote backend's tests:
//! it answers one connection after the other (every answer closes its
//! connection, so each request comes on a new one), by a script and then by
//! a standing answer, and records what it was sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// What the server does with one request.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    /// The request's success, as `ok` (given to [`serve`]) writes it.
    Ok,
    /// This status with an S3 error body of this code (none for a HEAD).
    Fail(u16, &'static str),
    /// Reads half the body, then drops the connection.
    CutHalfway,
    /// Reads nothing and never answers.
    Hang,
}

/// One request as the server read it (the body as far as it was read).
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub type Requests = Arc<Mutex<Vec<Request>>>;

/// A whole response: `status` with these headers and body, closing the
/// connection.
pub fn response(status: &str, headers: &str, body: &str) -> String {
    format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

/// Serves `script`, then `then` for every later request; `ok` writes the
/// response of a request answered [`Reply::Ok`]. Returns the port and the
/// requests seen.
pub fn serve(script: Vec<Reply>, then: Reply, ok: fn(&Request) -> String) -> (u16, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let mut script = script.into_iter();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let answer = script.next().unwrap_or(then);
            if let Reply::Hang = answer {
                held.push(conn);
                continue;
            }
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut words = line.split_whitespace();
            let method = words.next().unwrap_or_default().to_string();
            let target = words.next().unwrap_or_default().to_string();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((n, v)) = h.split_once(':') {
                    headers.push((n.trim().to_string(), v.trim().to_string()));
                }
            }
            let mut req = Request { method, target, headers, body: Vec::new() };
            let len: usize = req.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let read = if let Reply::CutHalfway = answer { len / 2 } else { len };
            req.body = vec![0; read];
            if reader.read_exact(&mut req.body).is_err() {
                req.body.clear();
            }
            seen.lock().unwrap().push(req.clone());
            let reply = match answer {
                Reply::Ok => ok(&req),
                Reply::Fail(status, _) if req.method == "HEAD" => {
                    format!("HTTP/1.1 {status} Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                }
                Reply::Fail(status, code) => response(
                    &format!("{status} Error"),
                    "Content-Type: application/xml\r\n",
                    &format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>{code}</Message></Error>"),
                ),
                Reply::CutHalfway | Reply::Hang => String::new(),
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    (port, log)
}
