/// Currencies whose smallest unit is the whole unit (Stripe's zero-decimal list).
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];
/// Currencies with three decimal places (Stripe's three-decimal list).
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

/// Formats an amount in minor units as Stripe counts them, e.g. `2500` USD as
/// `USD 25.00`, `2500` JPY as `JPY 2500`, `2500` KWD as `KWD 2.500`.
pub fn format_amount(minor: i64, currency: &str) -> String {
    let currency = currency.to_ascii_lowercase();
    let decimals = if ZERO_DECIMAL.contains(&currency.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&currency.as_str()) {
        3
    } else {
        2
    };
    let code = currency.to_ascii_uppercase();
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    if decimals == 0 {
        return format!("{code} {sign}{minor}");
    }
    let scale = 10u64.pow(decimals);
    let (whole, fraction) = (minor / scale, minor % scale);
    format!(
        "{code} {sign}{whole}.{fraction:0width$}",
        width = decimals as usize
    )
}

#[cfg(test)]
mod tests {
    use super::format_amount;

    #[test]
    fn amounts_use_the_currency_minor_unit() {
        assert_eq!(format_amount(2500, "usd"), "USD 25.00");
        assert_eq!(format_amount(5, "eur"), "EUR 0.05");
        assert_eq!(format_amount(2500, "jpy"), "JPY 2500");
        assert_eq!(format_amount(2500, "kwd"), "KWD 2.500");
        assert_eq!(format_amount(-199, "usd"), "USD -1.99");
    }
}
