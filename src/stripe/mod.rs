//! Everything that speaks to or hears from Stripe.

mod client;
pub mod event;
pub mod gateway;
pub mod listing;
pub mod pacer;
pub mod signature;

pub use gateway::{GatewayError, StripeGateway};
pub use listing::MadeRefund;
pub use pacer::{Pacer, Priority, Urgency};

/// The Stripe API version every request names (`Stripe-Version`): async-stripe's.
pub fn pinned_api_version() -> &'static str {
    stripe_shared::version::VERSION.as_str()
}

/// The first API version on which Stripe sends `refund.created`, `refund.updated` and
/// `refund.failed` for every refund.
const REFUND_EVENTS_SINCE: &str = "2024-10-28";

/// Whether an event rendered in `api_version` (its envelope's `api_version`,
/// `YYYY-MM-DD.name`) comes from an account that is sent refund events for every refund:
/// true from [`REFUND_EVENTS_SINCE`] on. An event without a version, or whose version does
/// not start with a date, is taken to be from before.
pub fn sends_refund_events(api_version: Option<&str>) -> bool {
    let Some(date) = api_version.and_then(|version| version.get(..10)) else {
        return false;
    };
    let is_date = date.bytes().enumerate().all(|(at, byte)| match at {
        4 | 7 => byte == b'-',
        _ => byte.is_ascii_digit(),
    });
    // Dates written YYYY-MM-DD sort as text in the order of time.
    is_date && date >= REFUND_EVENTS_SINCE
}

#[cfg(test)]
mod tests {
    use super::sends_refund_events;

    #[test]
    fn refund_events_are_sent_from_2024_10_28_on() {
        for (version, sends) in [
            (Some("2024-10-28.acacia"), true),
            (Some("2024-10-28"), true),
            (Some("2025-09-30.clover"), true),
            (Some("2024-10-27.acacia"), false),
            (Some("2024-09-30.acacia"), false),
            (Some("2020-08-27"), false),
            (Some("2024-1-28.acacia"), false),
            (Some("acacia"), false),
            (Some(""), false),
            (None, false),
        ] {
            assert_eq!(sends_refund_events(version), sends, "{version:?}");
        }
    }
}
