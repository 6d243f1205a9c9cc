//! `LOCALE`: how pages and emails write amounts of money.

use clap::Args;

use crate::domain::Locale;

/// How fulfilld writes for people.
#[derive(Args, Clone)]
pub struct LocaleSettings {
    /// How pages and emails write money, as a BCP 47 tag: `en-US`, `en-GB`, `de-DE`,
    /// `fr-FR`, `ja-JP`…; another region of a known language writes as its first locale.
    #[arg(
        long,
        env = "LOCALE",
        default_value = "en-US",
        value_parser = Locale::parse,
        global = true
    )]
    pub locale: Locale,
}
