use std::fmt;

/// The longest id Stripe hands out.
const MAX_LEN: usize = 255;

/// A Checkout Session id as Stripe writes it: `cs_test_…` or `cs_live_…`, ASCII letters
/// and digits after the prefix. Anything else is refused at the edge, before it can reach
/// a log line, a query or Stripe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// Parses an id, telling what is wrong with a bad one.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let rest = raw
            .strip_prefix("cs_test_")
            .or_else(|| raw.strip_prefix("cs_live_"))
            .ok_or("a Checkout Session id starts with cs_test_ or cs_live_")?;
        if rest.is_empty() || raw.len() > MAX_LEN {
            return Err(format!(
                "a Checkout Session id has 1 to {MAX_LEN} characters after its prefix"
            ));
        }
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("a Checkout Session id holds only letters and digits".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the id belongs to live mode.
    pub fn is_live(&self) -> bool {
        self.0.starts_with("cs_live_")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::SessionId;

    #[test]
    fn stripe_ids_are_accepted() {
        for id in [
            "cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY",
            "cs_live_1",
        ] {
            assert_eq!(
                SessionId::parse(id).map(|s| s.to_string()),
                Ok(id.to_owned())
            );
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for id in [
            "",
            "cs_test_",
            "pi_123",
            "cs_test_abc<script>",
            "cs_test_a b",
            "CS_TEST_abc",
        ] {
            assert!(SessionId::parse(id).is_err(), "{id:?} was accepted");
        }
        assert!(SessionId::parse(&format!("cs_test_{}", "a".repeat(300))).is_err());
    }
}
