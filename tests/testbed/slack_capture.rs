//! A stand-in for Slack's incoming-webhook endpoint on 127.0.0.1: it answers `ok` to every
//! POST and keeps the JSON bodies, so a test can check what replwatch would have shown in a
//! channel. Taken down ([`SlackCapture::set_down`]), it answers 503 and keeps nothing, as
//! Slack does during an outage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::Error;

/// A running capture server; dropped with the test's runtime.
#[derive(Debug, Clone)]
pub struct SlackCapture {
    url: String,
    messages: Arc<Mutex<Vec<serde_json::Value>>>,
    down: Arc<AtomicBool>,
}

impl SlackCapture {
    pub async fn start() -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!(
            "http://{}/services/T000LOCAL/B000LOCAL/capture",
            listener.local_addr()?
        );
        let messages = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let kept = Arc::clone(&messages);
        let is_down = Arc::clone(&down);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let kept = Arc::clone(&kept);
                let is_down = Arc::clone(&is_down);
                tokio::spawn(async move {
                    if let Ok(body) = read_request_body(&mut stream).await {
                        if is_down.load(Ordering::SeqCst) {
                            let _ = stream
                                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .await;
                            return;
                        }
                        if let Ok(json) = serde_json::from_slice(&body) {
                            kept.lock().unwrap_or_else(|p| p.into_inner()).push(json);
                        }
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                            .await;
                    }
                });
            }
        });
        Ok(Self {
            url,
            messages,
            down,
        })
    }

    /// Answers 503 to every post while `down`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The webhook URL to configure.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every message posted so far.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn read_request_body(stream: &mut tokio::net::TcpStream) -> Result<Vec<u8>, Error> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Err("connection closed before the request ended".into());
        }
        data.extend_from_slice(&buffer[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while data.len() < end + 4 + length {
                let n = stream.read(&mut buffer).await?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buffer[..n]);
            }
            return Ok(data[end + 4..].to_vec());
        }
    }
}
