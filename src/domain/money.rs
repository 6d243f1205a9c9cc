//! Amounts of money in minor units: written plainly for the command line and files
//! ([`format_amount`], read back by [`parse_amount`]), or as people read them where they
//! live ([`format_money`]).

use super::Locale;
use super::locale::Placement;

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

/// Writes an amount in minor units as `locale` reads money in `currency`: `5000` USD as
/// `$50.00` in `en-US`, `5000` EUR as `50,00 €` in `de-DE`, `5000` JPY as `¥5,000`. A
/// currency without a symbol in the locale is written as its code (`CHF 50.00`).
pub fn format_money(minor: i64, currency: &str, locale: Locale) -> String {
    let rules = locale.conventions();
    let code = currency.to_ascii_uppercase();
    let symbol = rules.symbol(&code).unwrap_or(&code);
    let decimals = decimals(currency);
    let scale = 10u64.pow(decimals);
    let magnitude = minor.unsigned_abs();
    let mut number = grouped(magnitude / scale, rules.group, rules.grouped_from);
    if decimals > 0 {
        number.push(rules.decimal);
        number.push_str(&format!(
            "{:0width$}",
            magnitude % scale,
            width = decimals as usize
        ));
    }
    let minus = if minor < 0 { rules.minus } else { "" };
    match rules.placement {
        // A code or a symbol ending in a letter would run into the digits.
        Placement::Before if symbol.ends_with(char::is_alphabetic) => {
            format!("{minus}{symbol}\u{a0}{number}")
        }
        Placement::Before => format!("{minus}{symbol}{number}"),
        Placement::BeforeSpaced => format!("{minus}{symbol}\u{a0}{number}"),
        Placement::BeforeSpacedSignAfter => format!("{symbol}\u{a0}{minus}{number}"),
        Placement::After => format!("{minus}{number}\u{a0}{symbol}"),
    }
}

/// `whole`'s digits in threes from the right, once it has `from` digits or more.
fn grouped(whole: u64, separator: char, from: usize) -> String {
    let digits = whole.to_string();
    if digits.len() < from {
        return digits;
    }
    let mut out = String::with_capacity(digits.len() * 2);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(separator);
        }
        out.push(digit);
    }
    out
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
    use proptest::prelude::*;

    use super::{Locale, format_amount, format_money, parse_amount};

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

    fn money(minor: i64, currency: &str, tag: &str) -> String {
        let locale = Locale::parse(tag).unwrap_or_else(|error| panic!("{error}"));
        format_money(minor, currency, locale)
    }

    #[test]
    fn money_reads_as_customers_read_it_where_they_are() {
        assert_eq!(money(5000, "usd", "en-US"), "$50.00");
        assert_eq!(money(5000, "eur", "en-US"), "€50.00");
        assert_eq!(money(5000, "gbp", "en-GB"), "£50.00");
        assert_eq!(money(5000, "eur", "de-DE"), "50,00\u{a0}€");
        assert_eq!(money(123_456, "eur", "fr-FR"), "1\u{202f}234,56\u{a0}€");
        assert_eq!(money(5000, "jpy", "en-US"), "¥5,000");
        assert_eq!(money(5000, "jpy", "ja-JP"), "￥5,000");
        assert_eq!(money(250_000, "kwd", "en-US"), "KWD\u{a0}250.000");
        assert_eq!(money(123_456_789, "usd", "en-US"), "$1,234,567.89");
        assert_eq!(money(5, "usd", "en-US"), "$0.05");
        assert_eq!(money(0, "jpy", "en-US"), "¥0");
    }

    #[test]
    fn a_currency_without_a_symbol_there_is_written_as_its_code() {
        assert_eq!(money(5000, "chf", "en-US"), "CHF\u{a0}50.00");
        assert_eq!(money(5000, "chf", "de-DE"), "50,00\u{a0}CHF");
        assert_eq!(money(5000, "xyz", "fr-FR"), "50,00\u{a0}XYZ");
        assert_eq!(money(5000, "usd", "en-GB"), "US$50.00");
        assert_eq!(money(5000, "sek", "sv-SE"), "50,00\u{a0}kr");
    }

    #[test]
    fn negative_amounts_carry_the_locale_minus_sign() {
        assert_eq!(money(-199, "usd", "en-US"), "-$1.99");
        assert_eq!(money(-199, "chf", "en-US"), "-CHF\u{a0}1.99");
        assert_eq!(money(-5000, "eur", "de-DE"), "-50,00\u{a0}€");
        assert_eq!(money(-5000, "eur", "nl-NL"), "€\u{a0}-50,00");
        assert_eq!(money(-5000, "eur", "de-AT"), "-€\u{a0}50,00");
        assert_eq!(money(-5000, "sek", "sv-SE"), "\u{2212}50,00\u{a0}kr");
        assert_eq!(
            money(i64::MIN, "usd", "en-US"),
            "-$92,233,720,368,547,758.08"
        );
    }

    #[test]
    fn some_locales_group_only_from_five_digits() {
        assert_eq!(money(123_450, "eur", "es-ES"), "1234,50\u{a0}€");
        assert_eq!(money(1_234_500, "eur", "es-ES"), "12.345,00\u{a0}€");
        assert_eq!(money(123_450, "pln", "pl-PL"), "1234,50\u{a0}zł");
        assert_eq!(money(1_234_500, "pln", "pl-PL"), "12\u{a0}345,00\u{a0}zł");
    }

    const CURRENCIES: &[&str] = &[
        "usd", "eur", "gbp", "jpy", "krw", "cad", "aud", "chf", "sek", "dkk", "nok", "pln", "kwd",
        "bhd", "brl", "mxn", "cny", "xyz",
    ];

    proptest! {
        #[test]
        fn the_digits_of_money_written_in_any_locale_read_back_as_the_amount(
            minor in any::<i64>(),
            currency in proptest::sample::select(CURRENCIES),
            locale in proptest::sample::select(Locale::listed().collect::<Vec<_>>()),
        ) {
            let written = format_money(minor, currency, locale);
            let digits: String = written.chars().filter(char::is_ascii_digit).collect();
            prop_assert_eq!(digits.parse::<u64>(), Ok(minor.unsigned_abs()), "{}", written);
            let negative = written.contains('-') || written.contains('\u{2212}');
            prop_assert_eq!(negative, minor < 0, "{}", written);
        }
    }
}
