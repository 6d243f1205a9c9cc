use std::fmt;

/// The longest id Stripe hands out.
const MAX_LEN: usize = 255;

/// A Stripe Connect account id, `acct_…` with ASCII letters and digits: the connected
/// account a session belongs to, sent as `Stripe-Account` on every call about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountId(String);

impl AccountId {
    /// Parses an id, telling what is wrong with a bad one.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let rest = raw
            .strip_prefix("acct_")
            .ok_or("a Stripe account id starts with acct_")?;
        if rest.is_empty() || raw.len() > MAX_LEN {
            return Err(format!(
                "a Stripe account id has 1 to {MAX_LEN} characters after its prefix"
            ));
        }
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("a Stripe account id holds only letters and digits".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::AccountId;

    #[test]
    fn account_ids_are_checked_like_session_ids() {
        assert!(AccountId::parse("acct_1032D82eZvKYlo2C").is_ok());
        for raw in ["", "acct_", "cus_123", "acct_1 2", "acct_x\"y"] {
            assert!(AccountId::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }
}
