//! The benchmark's mail server: accepts every message (the `mailin` crate speaks the
//! protocol, a thread per connection carries the bytes) and counts receipts by
//! `Message-ID`, so a receipt sent twice is seen.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use mailin::{Action, Handler, SessionBuilder, response};

/// What the server accepted.
#[derive(Default)]
struct Accepted {
    /// Times each `Message-ID` was accepted.
    by_id: HashMap<String, u32>,
    total: usize,
    last_at: Option<Instant>,
}

/// An SMTP server on 127.0.0.1 that accepts every message; lives as long as the process.
#[derive(Clone)]
pub struct MailSink {
    port: u16,
    accepted: Arc<Mutex<Accepted>>,
}

impl MailSink {
    /// Listens on a free port.
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let sink = Self {
            port: listener.local_addr()?.port(),
            accepted: Arc::default(),
        };
        let accepted = Arc::clone(&sink.accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let recorder = Recorder {
                    accepted: Arc::clone(&accepted),
                    head: Vec::new(),
                    in_head: false,
                };
                std::thread::spawn(move || serve(stream, recorder));
            }
        });
        Ok(sink)
    }

    /// The URL to give fulfilld as `SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Messages accepted so far, counting every copy.
    /// Messages accepted so far, each `Message-ID` once however often it came.
    pub fn distinct(&self) -> usize {
        self.lock().by_id.len()
    }

    /// When the latest message was accepted.
    pub fn last_at(&self) -> Option<Instant> {
        self.lock().last_at
    }

    /// How many times each `Message-ID` was accepted.
    pub fn counts(&self) -> HashMap<String, u32> {
        self.lock().by_id.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Accepted> {
        self.accepted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Recorder {
    accepted: Arc<Mutex<Accepted>>,
    /// The message's header, up to its blank line.
    head: Vec<u8>,
    in_head: bool,
}

impl Handler for Recorder {
    fn data_start(&mut self, _: &str, _: &str, _: bool, _: &[String]) -> response::Response {
        self.head.clear();
        self.in_head = true;
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.in_head {
            self.head.extend_from_slice(buf);
            self.in_head = !self.head.windows(4).any(|w| w == b"\r\n\r\n");
        }
        Ok(())
    }

    fn data_end(&mut self) -> response::Response {
        let id = message_id(&self.head).unwrap_or_default();
        let mut accepted = self
            .accepted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *accepted.by_id.entry(id).or_default() += 1;
        accepted.total += 1;
        accepted.last_at = Some(Instant::now());
        response::OK
    }
}

/// The `Message-ID` header's value, without its angle brackets.
fn message_id(head: &[u8]) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("message-id").then(|| {
            value
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// One SMTP conversation, until the client quits or goes away.
fn serve(stream: TcpStream, recorder: Recorder) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let remote = stream
        .peer_addr()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    let mut session = SessionBuilder::new("bench.invalid").build(remote, recorder);
    session.greeting().write_to(&mut writer)?;
    writer.flush()?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let reply = session.process(&line);
        match reply.action {
            Action::NoReply => continue,
            Action::Reply => {}
            Action::Close | Action::UpgradeTls => {
                reply.write_to(&mut writer)?;
                return writer.flush();
            }
        }
        reply.write_to(&mut writer)?;
        // Answer at once unless the client already sent more (pipelining).
        if reader.buffer().is_empty() {
            writer.flush()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_id_is_read_from_the_header_whatever_its_case() {
        let head = b"From: a@b.example\r\nmessage-id: <cs_test_1.receipt@shop.example>\r\n\r\n";
        assert_eq!(
            message_id(head).as_deref(),
            Some("cs_test_1.receipt@shop.example")
        );
        assert_eq!(message_id(b"Subject: hi\r\n\r\n"), None);
    }
}
