//! A real SMTP server for the tests: the `mailin` crate speaks the protocol, one thread per
//! connection carries the bytes, and every accepted message is recorded.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mailin::{Action, Handler, SessionBuilder, response};

/// A message the server accepted (answered 250 to).
#[derive(Debug, Clone)]
pub struct Received {
    pub to: Vec<String>,
    pub data: String,
}

impl Received {
    /// A header's value, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    pub fn message_id(&self) -> String {
        self.header("Message-ID")
            .expect("every message has a Message-ID")
    }

    /// The body with quoted-printable soft line breaks undone, for assertions on text.
    pub fn text(&self) -> String {
        self.data.replace("=\r\n", "").replace("=3D", "=")
    }

    /// The message with quoted-printable undone, for assertions on text that is not ASCII.
    pub fn decoded(&self) -> String {
        crate::helpers::quoted_printable(&self.data)
    }
}

/// Where a server that goes silent stops answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Accepts connections and never greets them.
    Greeting,
    /// Never answers `MAIL FROM`.
    MailFrom,
    /// Takes the whole message and never answers it; once it recovers it accepts the
    /// message, as a server that had queued it would, whether or not the client is still
    /// there to hear the `250`.
    MessageData,
}

#[derive(Default)]
struct State {
    stall: Mutex<Option<Stall>>,
    recovered: Condvar,
    /// How long the server takes over each message before answering.
    pace: Mutex<Duration>,
    accepted: Mutex<Vec<Received>>,
    holding: Mutex<bool>,
    /// Messages past the holding check and not yet accepted.
    accepting: Mutex<usize>,
    held: Mutex<usize>,
    released: Condvar,
    /// How many times held answers were released; a connection opened before the latest
    /// release belongs to a client that was cut off, and its messages are refused.
    releases: Mutex<u64>,
    /// Replies to `RCPT TO`, in order, before it accepts recipients again.
    recipients: Mutex<std::collections::VecDeque<u16>>,
    /// `DATA` commands answered, and messages whose end arrived, since the start.
    data: Mutex<(usize, usize)>,
}

#[derive(Clone)]
struct Recorder {
    state: Arc<State>,
    current: Option<Received>,
    /// The server's release count when this connection was opened.
    opened_after: u64,
}

impl State {
    /// Blocks the connection's thread while the server is silent at `point`.
    fn stall_at(&self, point: Stall) {
        let mut stall = self.stall.lock().unwrap();
        while *stall == Some(point) {
            stall = self.recovered.wait(stall).unwrap();
        }
    }
}

impl Handler for Recorder {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, _from: &str) -> response::Response {
        self.state.stall_at(Stall::MailFrom);
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> response::Response {
        match self.state.recipients.lock().unwrap().pop_front() {
            Some(code) => response::Response::custom(code, format!("<{to}>: no such user here")),
            None => response::OK,
        }
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> response::Response {
        self.current = Some(Received {
            to: to.to_vec(),
            data: String::new(),
        });
        self.state.data.lock().unwrap().0 += 1;
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(current) = &mut self.current {
            current.data.push_str(&String::from_utf8_lossy(buf));
        }
        Ok(())
    }

    fn data_end(&mut self) -> response::Response {
        let message = self.current.take();
        self.state.data.lock().unwrap().1 += 1;
        self.state.stall_at(Stall::MessageData);
        let mut holding = self.state.holding.lock().unwrap();
        if self.opened_after < *self.state.releases.lock().unwrap() {
            // The end of a message sent before a release, read only after it: the
            // client that sent it was cut off while it was in flight.
            return response::INTERNAL_ERROR;
        }
        if *holding {
            // Held messages are never accepted: once released they are refused, as a
            // server that never answered 250 would have lost them.
            *self.state.held.lock().unwrap() += 1;
            while *holding {
                holding = self.state.released.wait(holding).unwrap();
            }
            return response::INTERNAL_ERROR;
        }
        *self.state.accepting.lock().unwrap() += 1;
        drop(holding);
        let pace = *self.state.pace.lock().unwrap();
        std::thread::sleep(pace);
        if let Some(message) = message {
            self.state.accepted.lock().unwrap().push(message);
        }
        *self.state.accepting.lock().unwrap() -= 1;
        response::OK
    }
}

/// One SMTP conversation, until the client quits or goes away.
fn serve(stream: TcpStream, recorder: Recorder) -> std::io::Result<()> {
    let remote = stream
        .peer_addr()
        .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    recorder.state.stall_at(Stall::Greeting);
    let mut session = SessionBuilder::new("smtp.test").build(remote, recorder);
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
        writer.flush()?;
    }
}

/// The test SMTP server.
pub struct SmtpServer {
    port: u16,
    state: Arc<State>,
}

impl SmtpServer {
    /// A server listening on a free port.
    pub fn start() -> Self {
        let server = Self::down();
        server.come_up();
        server
    }

    /// A server whose port is chosen but not listening yet: connections are refused.
    pub fn down() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        Self {
            port,
            state: Arc::default(),
        }
    }

    /// Starts listening on the server's port.
    pub fn come_up(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("SMTP port free");
        let state = Arc::clone(&self.state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let recorder = Recorder {
                    opened_after: *state.releases.lock().unwrap(),
                    state: Arc::clone(&state),
                    current: None,
                };
                std::thread::spawn(move || serve(stream, recorder));
            }
        });
    }

    /// Messages whose data has arrived and whose answer is still being made.
    pub fn answering(&self) -> usize {
        *self.state.accepting.lock().unwrap()
    }

    /// Answers the next `RCPT TO`s with `codes` (550 refuses for good, 450 for now).
    pub fn refuse_recipients(&self, codes: &[u16]) {
        self.state.recipients.lock().unwrap().extend(codes);
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message accepted so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.state.accepted.lock().unwrap().clone()
    }

    /// Makes the server take `pace` over each message, as a busy one does.
    pub fn slow_down(&self, pace: Duration) {
        *self.state.pace.lock().unwrap() = pace;
    }

    /// From now on, messages whose end arrives are held unanswered until
    /// [`Self::release`], then refused. Returns once the messages already being accepted
    /// are in [`Self::accepted`].
    pub fn hold(&self) {
        *self.state.holding.lock().unwrap() = true;
        while *self.state.accepting.lock().unwrap() > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lets held answers go (as refusals) and accepts messages again, on new connections
    /// only: a message on a connection opened before the release is refused, even if its
    /// end is read after it.
    pub fn release(&self) {
        let mut holding = self.state.holding.lock().unwrap();
        *self.state.releases.lock().unwrap() += 1;
        *holding = false;
        drop(holding);
        self.state.released.notify_all();
    }

    /// From now on, the server goes silent at `point`: connections wait there unanswered.
    pub fn go_silent(&self, point: Stall) {
        *self.state.stall.lock().unwrap() = Some(point);
    }

    /// Ends a silence: waiting connections carry on (most find their client gone).
    pub fn recover(&self) {
        *self.state.stall.lock().unwrap() = None;
        self.state.recovered.notify_all();
    }

    /// How many messages have been held since the server started.
    pub fn held(&self) -> usize {
        *self.state.held.lock().unwrap()
    }

    /// Waits until at least `count` messages are held unanswered.
    pub async fn wait_held(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.held() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} messages held",
                self.held()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until at least `started` `DATA` commands were answered and the end of at
    /// least `ended` messages arrived, whether answered or not.
    pub async fn wait_data(&self, started: usize, ended: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let data = *self.state.data.lock().unwrap();
            if data.0 >= started && data.1 >= ended {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{data:?} of ({started}, {ended}) messages started and ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until at least `count` messages are accepted, then returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let accepted = self.accepted();
            if accepted.len() >= count {
                return accepted;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} messages arrived",
                accepted.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
