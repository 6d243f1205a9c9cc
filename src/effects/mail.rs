//! Where mail goes: an SMTP server (`SMTP_URL`), or `.eml` files for local runs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lettre::Message;

use super::smtp::{SmtpFailure, SmtpPool, SmtpServer};
use super::{Attempt, EffectError};
use crate::configuration::EffectsConfig;

/// The mail transport.
pub enum Transport {
    /// An SMTP server, over a pool of kept-alive connections.
    Smtp(SmtpPool),
    /// One file per message, named after the message, so a repeat overwrites rather than
    /// duplicates (lettre's own file transport names files at random).
    Files(PathBuf),
}

impl Transport {
    pub fn from_config(config: &EffectsConfig) -> anyhow::Result<Self> {
        match &config.smtp_url {
            Some(url) => {
                let server = SmtpServer::parse(url.expose())
                    .map_err(|problem| anyhow::anyhow!("SMTP_URL: {problem}"))?;
                Ok(Self::Smtp(SmtpPool::new(server, config.smtp_sync_gap)))
            }
            None => Ok(Self::Files(config.mail_dir.clone())),
        }
    }

    /// Sends `message` within `attempt`'s deadline; `name` is unique per message and names
    /// its file.
    pub async fn send(
        &self,
        message: Message,
        name: &str,
        attempt: &Attempt,
    ) -> Result<(), EffectError> {
        match self {
            Self::Smtp(pool) => {
                let send = async {
                    let bytes = message.formatted();
                    let commit = |handed| {
                        let committed = attempt.commit();
                        if committed {
                            attempt.keep_until_recorded(handed);
                        }
                        committed
                    };
                    match pool
                        .send(message.envelope(), &bytes, attempt.latest_start(), commit)
                        .await
                    {
                        Ok(()) => Ok(()),
                        Err(SmtpFailure::Late) => Err(EffectError::Retry(
                            "the mail server, or the record of the message sent before, was \
                             not ready within half the attempt's time; nothing was sent"
                                .into(),
                        )),
                        Err(SmtpFailure::Connect(e)) => Err(EffectError::Retry(format!(
                            "SMTP: cannot reach the mail server: {e}"
                        ))),
                        Err(SmtpFailure::Unusable(reason)) => {
                            Err(EffectError::Permanent(reason.into()))
                        }
                        Err(SmtpFailure::Smtp(e)) => {
                            let reason = redact_addresses(&format!("SMTP: {e}"));
                            Err(if e.is_permanent() {
                                EffectError::Permanent(reason)
                            } else {
                                EffectError::Retry(reason)
                            })
                        }
                    }
                };
                attempt.io(send).await
            }
            Self::Files(dir) => {
                let write = async {
                    write_eml(dir, name, &message.formatted())
                        .await
                        .map_err(|e| EffectError::Retry(format!("{e:#}")))
                };
                attempt.io(write).await
            }
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
