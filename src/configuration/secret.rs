//! Secrets in the configuration: never printed, wiped when dropped.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A secret string that never prints itself and is wiped from memory when dropped
/// (`secrecy`'s `SecretString`).
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}
