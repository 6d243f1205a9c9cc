//! What the admin templates show, already formatted: times in UTC, amounts in their
//! currency, states as words.

use std::time::{Duration, UNIX_EPOCH};

use crate::db::admin::{ReversalRow, SessionRow, StockRow};
use crate::db::effects::EffectView;
use crate::db::inbox::EventView;
use crate::domain::{EffectStatus, Locale, format_money};

/// A time stored in milliseconds since the epoch, as `2025-06-01 12:00:00 UTC`.
pub fn when(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replacen('T', " ", 1)
        .replace('Z', " UTC")
}

/// A session in a list.
pub struct SessionLine {
    pub id: String,
    pub status: &'static str,
    pub total: String,
    pub email: String,
    pub created: String,
    pub fulfilled: String,
    /// The connected account, or empty for the platform's own sessions.
    pub account: String,
}

impl SessionLine {
    pub fn new(row: SessionRow, locale: Locale) -> Self {
        Self {
            status: row.status.as_str(),
            total: row
                .amount_total
                .zip(row.currency.as_deref())
                .map(|(amount, currency)| format_money(amount, currency, locale))
                .unwrap_or_default(),
            email: row.customer_email.unwrap_or_default(),
            created: when(row.created_at),
            fulfilled: row.fulfilled_at.map(when).unwrap_or_default(),
            account: row.account.unwrap_or_default(),
            id: row.id,
        }
    }
}

/// A stored webhook event.
pub struct EventLine {
    pub id: String,
    pub event_type: String,
    pub session_id: String,
    pub state: &'static str,
    pub attempts: i32,
    pub received: String,
    pub last_error: String,
}

impl From<EventView> for EventLine {
    fn from(event: EventView) -> Self {
        Self {
            state: event.state(),
            received: when(event.received_at),
            last_error: event.last_error.unwrap_or_default(),
            id: event.id,
            event_type: event.event_type,
            session_id: event.session_id,
            attempts: event.attempts,
        }
    }
}

/// A side effect from the outbox.
pub struct EffectLine {
    pub id: i64,
    pub session_id: String,
    pub kind: &'static str,
    pub status: &'static str,
    pub attempts: i32,
    /// When a pending effect is next tried; empty once it is done or dead.
    pub next_attempt: String,
    pub last_error: String,
}

impl From<EffectView> for EffectLine {
    fn from(effect: EffectView) -> Self {
        Self {
            next_attempt: match effect.status {
                EffectStatus::Pending => when(effect.next_attempt_at),
                _ => String::new(),
            },
            id: effect.id,
            kind: effect.kind.as_str(),
            status: effect.status.as_str(),
            attempts: effect.attempts,
            last_error: effect.last_error.unwrap_or_default(),
            session_id: effect.session_id,
        }
    }
}

/// A refund or dispute of a session.
pub struct ReversalLine {
    pub id: String,
    pub kind: String,
    pub amount: String,
    pub status: String,
    pub items: String,
    pub updated: String,
}

impl ReversalLine {
    pub fn new(row: ReversalRow, currency: &str, locale: Locale) -> Self {
        Self {
            amount: format_money(row.amount, currency, locale),
            updated: when(row.updated_at),
            items: row.items.unwrap_or_default(),
            id: row.id,
            kind: row.kind,
            status: row.status,
        }
    }
}

/// A SKU's stock, with the catalog's name when it has one.
pub struct StockLine {
    pub sku: String,
    pub name: String,
    pub stock: i64,
    pub oversold: bool,
    pub updated: String,
}

impl StockLine {
    pub fn new(row: StockRow, name: Option<String>) -> Self {
        Self {
            name: name.unwrap_or_default(),
            updated: when(row.updated_at),
            sku: row.sku,
            stock: row.stock,
            oversold: row.oversold,
        }
    }
}

/// A message for the page an operator's form led back to. Only these words are shown,
/// never text from the query string, so a link cannot put words in the page's mouth.
pub fn notice(code: &str, id: &str) -> Option<String> {
    let id_is_plain = !id.is_empty()
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !id_is_plain {
        return None;
    }
    Some(match code {
        "effect_retried" => format!("Effect {id} is pending again and will be tried now."),
        "effect_not_dead" => {
            format!("Effect {id} is not dead (retried already?): nothing changed.")
        }
        "event_retried" => format!("Event {id} is being carried out again."),
        "event_not_dead" => format!("Event {id} is not dead (retried already?): nothing changed."),
        "refund_made" if id.starts_with("re_") => format!(
            "Stripe made refund {id}. What it reverses shows here once Stripe's webhook arrives."
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_in_utc() {
        assert_eq!(when(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
        assert_eq!(when(-5), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn only_known_notices_about_plain_ids_are_shown() {
        assert!(notice("effect_retried", "42").is_some());
        assert_eq!(notice("effect_retried", "<b>hi</b>"), None);
        assert_eq!(notice("you_have_won", "42"), None);
    }
}
