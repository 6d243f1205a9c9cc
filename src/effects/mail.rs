//! Where mail goes: an SMTP server (`SMTP_URL`), or `.eml` files for local runs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Semaphore;

use super::EffectError;
use crate::configuration::EffectsConfig;

/// SMTP connections kept open to the mail server.
const SMTP_POOL_SIZE: u32 = 8;

/// The mail transport.
pub enum Transport {
    /// lettre's pooled async SMTP client, with a timeout on every command. Sends beyond
    /// the pool's size wait for a connection first, so that a burst never times out in a
    /// queue. A send is never cancelled from outside: lettre would put a connection that
    /// still owes a reply back in its pool, and the next message would read that reply.
    Smtp {
        pool: SmtpPool,
        connections: Semaphore,
    },
    /// One file per message, named after the message, so a repeat overwrites rather than
    /// duplicates (lettre's own file transport names files at random).
    Files(PathBuf),
}

impl Transport {
    pub fn from_config(config: &EffectsConfig) -> anyhow::Result<Self> {
        match &config.smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    // lettre's error could quote the URL, and with it a password.
                    .map_err(|_| {
                        anyhow::anyhow!("SMTP_URL is not a valid smtp:// or smtps:// URL")
                    })?
                    .timeout(Some(config.timeout))
                    .pool_config(PoolConfig::new().max_size(SMTP_POOL_SIZE))
                    .build();
                Ok(Self::Smtp {
                    pool: SmtpPool(Some(transport)),
                    connections: Semaphore::new(SMTP_POOL_SIZE as usize),
                })
            }
            None => Ok(Self::Files(config.mail_dir.clone())),
        }
    }

    /// Sends `message`; `name` is unique per message and names its file.
    pub async fn send(&self, message: Message, name: &str) -> Result<(), EffectError> {
        match self {
            Self::Smtp { pool, connections } => {
                let closed = || EffectError::Retry("the SMTP pool is closed".into());
                let smtp = pool.0.as_ref().ok_or_else(closed)?;
                let _connection = connections.acquire().await.map_err(|_| closed())?;
                smtp.send(message).await.map(drop).map_err(|e| {
                    let reason = redact_addresses(&format!("SMTP: {e}"));
                    if e.is_permanent() {
                        EffectError::Permanent(reason)
                    } else {
                        EffectError::Retry(reason)
                    }
                })
            }
            Self::Files(dir) => write_eml(dir, name, &message.formatted())
                .await
                .map_err(|e| EffectError::Retry(format!("{e:#}"))),
        }
    }
}

/// lettre's SMTP pool, which closes its connections on a task of the current runtime when
/// dropped, and panics when there is none. A pool dropped as the runtime goes away (at the
/// end of the process) is left to the operating system instead.
pub struct SmtpPool(Option<AsyncSmtpTransport<Tokio1Executor>>);

impl Drop for SmtpPool {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take()
            && tokio::runtime::Handle::try_current().is_err()
        {
            std::mem::forget(pool);
        }
    }
}

async fn write_eml(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("could not create the mail folder {}", dir.display()))?;
    let path = dir.join(format!("{name}.eml"));
    let partial = dir.join(format!(".{name}.eml.partial"));
    tokio::fs::write(&partial, bytes)
        .await
        .with_context(|| format!("could not write {}", partial.display()))?;
    // A rename is atomic: a reader never sees half a message.
    tokio::fs::rename(&partial, &path)
        .await
        .with_context(|| format!("could not write {}", path.display()))
}

/// Replaces anything shaped like an email address, so that a server's error text can be
/// stored and logged without the customer's address.
pub fn redact_addresses(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains('@') {
                "[address]"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_lose_the_addresses_they_quote() {
        assert_eq!(
            redact_addresses("550 5.1.1 <jenny@example.com>: mailbox unavailable"),
            "550 5.1.1 [address] mailbox unavailable"
        );
    }
}
