//! An SMTP client that keeps connections open between messages and never reuses one whose
//! conversation was cut short.
//!
//! lettre's own pool puts a connection back when the future using it is dropped, even if
//! the server still owes it a reply; the next message would read that reply as its own.
//! Here a connection is owned by the send using it and goes back to the pool only after a
//! complete, successful transaction: a send dropped at its deadline drops (closes) its
//! connection. lettre's `timeout` bounds only the TCP connect, so the deadline of every
//! command comes from the caller ([`super::Attempt::io`]).
//!
//! Between a server taking a message and the record that it was sent, a crash sends it
//! again: the SMTP sync gap. A process lets `SMTP_SYNC_GAP` messages (one by default) at a
//! time into that gap, so that a crash repeats that many receipts at most. Everything
//! before the message body (connecting, `MAIL`, `RCPT`, `DATA`) runs for several messages
//! at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::Error;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Connections a process keeps open to the mail server at most.
const MAX_CONNECTIONS: usize = 8;
/// An idle connection older than this is closed rather than reused: servers drop idle
/// clients after a few minutes, and a fresh connection is cheaper than a failed message.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// Where `SMTP_URL` points: `smtp://` (plain), `smtp://…?tls=required` or
/// `?tls=opportunistic` (STARTTLS), `smtps://` (TLS from the start); as lettre reads it.
pub struct SmtpServer {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
    hello: ClientId,
}

enum Tls {
    None,
    Required(TlsParameters),
    Opportunistic(TlsParameters),
    Wrapper(TlsParameters),
}

impl SmtpServer {
    /// Parses `SMTP_URL`. Errors never quote the URL: it may hold a password.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        let host = url.host_str().ok_or("no host")?.to_owned();
        let tls_parameters =
            || TlsParameters::new(host.clone()).map_err(|e| format!("TLS cannot be set up: {e}"));
        let query = url
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, value)| value.into_owned());
        let (tls, default_port) = match (url.scheme(), query.as_deref()) {
            ("smtp", None) => (Tls::None, 25),
            ("smtp", Some("required")) => (Tls::Required(tls_parameters()?), 587),
            ("smtp", Some("opportunistic")) => (Tls::Opportunistic(tls_parameters()?), 587),
            ("smtps", _) => (Tls::Wrapper(tls_parameters()?), 465),
            _ => return Err("expected smtp://…, smtp://…?tls=required or smtps://…".into()),
        };
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
                .map_err(|_| "credentials are not valid UTF-8".to_owned())
        };
        if url.password().is_some() && matches!(tls, Tls::None) {
            return Err(
                "credentials need encryption: add ?tls=required, or use smtps://, so that the \
                 password is never sent in clear"
                    .into(),
            );
        }
        let credentials = match url.password() {
            Some(password) => Some(Credentials::new(decode(url.username())?, decode(password)?)),
            None => None,
        };
        let hello = match url.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_owned()),
        };
        Ok(Self {
            port: url.port().unwrap_or(default_port),
            host,
            tls,
            credentials,
            hello,
        })
    }

    /// Opens a connection ready for mail: greeted, encrypted as configured, signed in.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpFailure> {
        let wrapper = match &self.tls {
            Tls::Wrapper(parameters) => Some(parameters.clone()),
            _ => None,
        };
        let address = (self.host.as_str(), self.port);
        let mut conn = match wrapper {
            Some(_) => {
                AsyncSmtpConnection::connect_tokio1(address, None, &self.hello, wrapper, None)
                    .await
                    .map_err(SmtpFailure::Smtp)?
            }
            None => {
                // lettre leaves Nagle's algorithm on: a message's last small write would
                // wait for the server's delayed ACK, about 40 ms a message.
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(SmtpFailure::Connect)?;
                stream.set_nodelay(true).map_err(SmtpFailure::Connect)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                    .await
                    .map_err(SmtpFailure::Smtp)?
            }
        };
        match &self.tls {
            Tls::Required(parameters) => conn
                .starttls(parameters.clone(), &self.hello)
                .await
                .map_err(SmtpFailure::Smtp)?,
            Tls::Opportunistic(parameters) if conn.can_starttls() => conn
                .starttls(parameters.clone(), &self.hello)
                .await
                .map_err(SmtpFailure::Smtp)?,
            _ => {}
        }
        if let Some(credentials) = &self.credentials {
            // With `tls=opportunistic` a server (or anyone in between) can leave STARTTLS
            // out; the password is never sent in clear.
            if !conn.is_encrypted() {
                return Err(SmtpFailure::Unusable(
                    "the server did not offer STARTTLS; the password is not sent in clear",
                ));
            }
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(SmtpFailure::Smtp)?;
        }
        Ok(conn)
    }
}

/// How a transaction failed: before the message was handed over, or after.
enum Failed {
    /// The message was not handed over.
    Before(Error),
    /// Too late to hand the message over; it was not.
    Late,
    /// The server lacks an extension the message needs; nothing was sent.
    Unsupported(&'static str),
    /// The message was sent but its answer did not come: the server may have it.
    After(Error),
}

/// Why a message was not sent.
pub enum SmtpFailure {
    /// Too late to hand the message over; it was not.
    Late,
    /// The server refused, or the conversation broke.
    Smtp(Error),
    /// No connection could be opened; nothing was sent.
    Connect(std::io::Error),
    /// The server cannot take the message as fulfilld must send it; nothing was sent.
    Unusable(&'static str),
}

impl From<Failed> for SmtpFailure {
    fn from(failed: Failed) -> Self {
        match failed {
            Failed::Before(error) | Failed::After(error) => Self::Smtp(error),
            Failed::Late => Self::Late,
            Failed::Unsupported(reason) => Self::Unusable(reason),
        }
    }
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// The pool of connections to one mail server.
pub struct SmtpPool {
    server: SmtpServer,
    idle: Mutex<Vec<Idle>>,
    open: Semaphore,
    /// A permit a message, `SMTP_SYNC_GAP` of them: held from just before a message body
    /// goes out until that message is recorded as sent.
    gap: Arc<Semaphore>,
}

/// A message's place in the sync gap: from just before its body goes out until its end
/// (sent, or failed after the body went) is recorded. While it is kept, no other message
/// of this process takes it; drop it once the record is durable (or has failed).
#[derive(Debug)]
#[must_use = "dropped at once, it lets the next message into the sync gap before this one is recorded"]
pub struct Handed {
    _permit: OwnedSemaphorePermit,
}

impl SmtpPool {
    /// A pool that lets `gap` messages at a time into the sync gap (at least one).
    pub fn new(server: SmtpServer, gap: usize) -> Self {
        Self {
            server,
            idle: Mutex::new(Vec::new()),
            open: Semaphore::new(MAX_CONNECTIONS),
            gap: Arc::new(Semaphore::new(gap.clamp(1, MAX_CONNECTIONS))),
        }
    }

    /// Sends one message. `commit` is asked just before the message body goes out, the
    /// step that cannot be taken back, and given the message's place in the sync gap to
    /// keep until the attempt's end is recorded; if it says no, the body is never sent.
    /// Waiting for a connection, and for a place in the gap, ends at `latest_start`.
    /// Cancel-safe: dropped at any point, it closes the connection it holds. A kept
    /// connection that fails before the message is handed over (a server that closed it
    /// while idle) is replaced once by a fresh one.
    pub async fn send(
        &self,
        envelope: &Envelope,
        message: &[u8],
        latest_start: Instant,
        commit: impl Fn(Handed) -> bool,
    ) -> Result<(), SmtpFailure> {
        let Ok(Ok(_slot)) = tokio::time::timeout_at(latest_start, self.open.acquire()).await else {
            return Err(SmtpFailure::Late);
        };
        let hand_over = Handover {
            gap: &self.gap,
            latest_start,
            commit,
        };
        if let Some(mut conn) = self.take_idle() {
            match transact(&mut conn, envelope, message, &hand_over).await {
                Ok(()) => {
                    self.give_back(conn);
                    return Ok(());
                }
                // Refused before the message went, for good: a fresh connection would be
                // refused too. Anything else (a closed connection, a 421) is worth one.
                Err(Failed::Before(error)) if error.is_permanent() => {
                    return Err(SmtpFailure::Smtp(error));
                }
                Err(Failed::Before(_)) => {}
                Err(failed) => return Err(failed.into()),
            }
        }
        let mut conn = self.server.connect().await?;
        transact(&mut conn, envelope, message, &hand_over).await?;
        self.give_back(conn);
        Ok(())
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        while let Some(Idle { conn, since }) = idle.pop() {
            if since.elapsed() < MAX_IDLE {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, conn: AsyncSmtpConnection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }
}

/// What a transaction needs at the point of no return.
struct Handover<'a, F> {
    gap: &'a Arc<Semaphore>,
    latest_start: Instant,
    commit: F,
}

impl<F: Fn(Handed) -> bool> Handover<'_, F> {
    /// Waits for a place in the sync gap, then asks `commit`, which keeps it. False: too
    /// late, and nothing may be sent.
    async fn enter(&self) -> bool {
        let place =
            tokio::time::timeout_at(self.latest_start, Arc::clone(self.gap).acquire_owned());
        match place.await {
            Ok(Ok(permit)) => (self.commit)(Handed { _permit: permit }),
            _ => false,
        }
    }
}

/// One mail transaction: MAIL, RCPT for each recipient, DATA, the message.
async fn transact<F: Fn(Handed) -> bool>(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    message: &[u8],
    hand_over: &Handover<'_, F>,
) -> Result<(), Failed> {
    let mut options = Vec::new();
    let supports = |extension| conn.server_info().supports_feature(extension);
    let non_ascii = |address: &Address| !AsRef::<str>::as_ref(address).is_ascii();
    // As lettre's own send: an option the server did not announce is not used (lettre
    // builds 7-bit messages, so these are rare).
    if envelope.from().is_some_and(non_ascii) || envelope.to().iter().any(non_ascii) {
        if !supports(Extension::SmtpUtfEight) {
            return Err(Failed::Unsupported(
                "the mail server does not take non-ASCII addresses (no SMTPUTF8)",
            ));
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !supports(Extension::EightBitMime) {
            return Err(Failed::Unsupported(
                "the mail server does not take 8-bit messages (no 8BITMIME)",
            ));
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(envelope.from().cloned(), options))
        .await
        .map_err(Failed::Before)?;
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), Vec::new()))
            .await
            .map_err(Failed::Before)?;
    }
    conn.command(Data).await.map_err(Failed::Before)?;
    if !hand_over.enter().await {
        return Err(Failed::Late);
    }
    // From here, whatever becomes of the answer, the message keeps its place in the gap
    // until the attempt's end is recorded: the server may have it.
    conn.message(message).await.map_err(Failed::After)?;
    Ok(())
}
