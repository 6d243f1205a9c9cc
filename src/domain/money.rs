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
    let decimals = decimals(currency);
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

/// Reads an amount written the way [`format_amount`] writes it, without the code:
/// `9`, `9.5` or `9.50` USD is `950`, `2500` JPY is `2500`. Refuses a sign, more decimals
/// than the currency has, and anything that is not digits.
pub fn parse_amount(text: &str, currency: &str) -> Result<i64, String> {
    let decimals = decimals(currency);
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    let example = if decimals == 0 { "500" } else { "9.50" };
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return Err(format!(
            "expected an amount in {}, like {example}",
            currency.to_ascii_uppercase()
        ));
    }
    if fraction.len() > decimals as usize {
        return Err(format!(
            "{} has {decimals} decimal places, not {}",
            currency.to_ascii_uppercase(),
            fraction.len()
        ));
    }
    let too_large = || "too large an amount".to_owned();
    let whole: i64 = whole.parse().map_err(|_| too_large())?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<i64>().map_err(|_| too_large())?
            * 10i64.pow(decimals - fraction.len() as u32)
    };
    whole
        .checked_mul(10i64.pow(decimals))
        .and_then(|minor| minor.checked_add(fraction))
        .ok_or_else(too_large)
}

/// The decimal places of `currency`'s minor unit, as Stripe counts them.
fn decimals(currency: &str) -> u32 {
    let currency = currency.to_ascii_lowercase();
    if ZERO_DECIMAL.contains(&currency.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&currency.as_str()) {
        3
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::{format_amount, parse_amount};

    #[test]
    fn amounts_are_read_in_the_currency_minor_unit_and_nonsense_is_refused() {
        assert_eq!(parse_amount("9", "usd"), Ok(900));
        assert_eq!(parse_amount(" 9.5 ", "usd"), Ok(950));
        assert_eq!(parse_amount("0.05", "EUR"), Ok(5));
        assert_eq!(parse_amount("2500", "jpy"), Ok(2500));
        assert_eq!(parse_amount("2.5", "kwd"), Ok(2500));
        for (text, says) in [
            ("", "like 9.50"),
            ("-1", "like 9.50"),
            ("1e3", "like 9.50"),
            (".5", "like 9.50"),
            ("9.999", "USD has 2 decimal places, not 3"),
            ("99999999999999999999", "too large"),
        ] {
            assert!(
                parse_amount(text, "usd").unwrap_err().contains(says),
                "{text}"
            );
        }
        assert!(
            parse_amount("5.0", "jpy")
                .unwrap_err()
                .contains("0 decimal")
        );
        for minor in [0, 1, 99, 100, 123_456] {
            let written = format_amount(minor, "usd");
            assert_eq!(parse_amount(&written[4..], "usd"), Ok(minor));
        }
    }

    #[test]
    fn amounts_use_the_currency_minor_unit() {
        assert_eq!(format_amount(2500, "usd"), "USD 25.00");
        assert_eq!(format_amount(5, "eur"), "EUR 0.05");
        assert_eq!(format_amount(2500, "jpy"), "JPY 2500");
        assert_eq!(format_amount(2500, "kwd"), "KWD 2.500");
        assert_eq!(format_amount(-199, "usd"), "USD -1.99");
    }
}
