//! `LOCALE`: how people in a place write an amount of money, as CLDR says (the data ICU
//! and browsers format with): the currency's symbol and where it goes, the decimal and
//! grouping separators, the minus sign.
//!
//! A compact table of common locales rather than all of CLDR. A tag whose language is
//! known but whose region is not listed (`de-CH`, `en-IN`) gets the language's first
//! locale; a currency without a symbol in the locale is written as its ISO code
//! (`CHF 50.00`, `50,00 CHF`). Separators are CLDR's: French groups with a narrow
//! no-break space (U+202F), Canadian French, Polish, Portuguese and the Nordic languages
//! with a no-break space (U+00A0); a symbol written apart from the number is kept on its
//! line by a no-break space, as are codes and letters before a number. For the locales
//! and currencies listed here, what [`format_money`](super::format_money) writes is what
//! ICU 78 (CLDR 48) writes; the number of decimals is Stripe's, as everywhere in fulfilld.

/// Where the currency goes, and the minus sign with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    /// `$50.00`, `-$50.00`; a code or a symbol ending in a letter is spaced: `CHF 50.00`.
    Before,
    /// `€ 50,00`, `-€ 50,00`.
    BeforeSpaced,
    /// `€ 50,00`, `€ -50,00`.
    BeforeSpacedSignAfter,
    /// `50,00 €`, `-50,00 €`.
    After,
}

/// One locale's way of writing money.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Conventions {
    tag: &'static str,
    pub(super) decimal: char,
    pub(super) group: char,
    /// Digits the whole part needs before it is grouped: 4 (`1,234`) or 5 (`1234,50`,
    /// `12.345,00`), CLDR's minimum grouping digits plus three.
    pub(super) grouped_from: usize,
    pub(super) placement: Placement,
    pub(super) minus: &'static str,
    /// `CODE symbol` pairs, `|`-separated; a currency not listed is written as its code.
    symbols: &'static str,
}

const NBSP: char = '\u{a0}';
const NNBSP: char = '\u{202f}';
const MINUS: &str = "\u{2212}";

const EN_US: Conventions = Conventions {
    tag: "en-US",
    decimal: '.',
    group: ',',
    grouped_from: 4,
    placement: Placement::Before,
    minus: "-",
    symbols: "USD $|EUR €|GBP £|JPY ¥|CNY CN¥|INR ₹|KRW ₩|CAD CA$|AUD A$|NZD NZ$|HKD HK$|MXN MX$|BRL R$",
};
const DE_DE: Conventions = Conventions {
    tag: "de-DE",
    decimal: ',',
    group: '.',
    placement: Placement::After,
    symbols: "USD $|EUR €|GBP £|JPY ¥|CNY CN¥|INR ₹|KRW ₩|CAD CA$|AUD AU$|NZD NZ$|HKD HK$|MXN MX$|BRL R$",
    ..EN_US
};
const FR_FR: Conventions = Conventions {
    tag: "fr-FR",
    group: NNBSP,
    symbols: "USD $US|EUR €|GBP £GB|INR ₹|KRW ₩|CAD $CA|AUD $AU|NZD $NZ|MXN $MX|BRL R$",
    ..DE_DE
};
const ES_ES: Conventions = Conventions {
    tag: "es-ES",
    grouped_from: 5,
    symbols: "USD US$|EUR €",
    ..DE_DE
};
const NL_NL: Conventions = Conventions {
    tag: "nl-NL",
    placement: Placement::BeforeSpacedSignAfter,
    symbols: "USD US$|EUR €|GBP £|JPY JP¥|CNY CN¥|INR ₹|KRW ₩|CAD C$|AUD AU$|NZD NZ$|HKD HK$|MXN MX$|BRL R$",
    ..DE_DE
};
const PT_BR: Conventions = Conventions {
    tag: "pt-BR",
    placement: Placement::BeforeSpaced,
    symbols: "USD US$|EUR €|GBP £|JPY JP¥|CNY CN¥|INR ₹|KRW ₩|CAD CA$|AUD AU$|NZD NZ$|HKD HK$|MXN MX$|BRL R$",
    ..DE_DE
};
const SV_SE: Conventions = Conventions {
    tag: "sv-SE",
    group: NBSP,
    minus: MINUS,
    symbols: "USD US$|EUR €|CAD CA$|MXN MX$|BRL BR$|SEK kr|DKK Dkr|NOK Nkr",
    ..DE_DE
};

/// The first locale of each language is the one a tag with an unlisted region gets.
const LOCALES: &[Conventions] = &[
    EN_US,
    Conventions {
        tag: "en-GB",
        symbols: "USD US$|EUR €|GBP £|JPY JP¥|CNY CN¥|INR ₹|KRW ₩|CAD CA$|AUD A$|NZD NZ$|HKD HK$|MXN MX$|BRL R$",
        ..EN_US
    },
    Conventions {
        tag: "en-CA",
        symbols: "USD US$|EUR €|GBP £|JPY JP¥|CNY CN¥|INR ₹|KRW ₩|CAD $|AUD A$|NZD NZ$|HKD HK$|MXN MX$|BRL R$",
        ..EN_US
    },
    Conventions {
        tag: "en-AU",
        symbols: "AUD $",
        ..EN_US
    },
    DE_DE,
    Conventions {
        tag: "de-AT",
        placement: Placement::BeforeSpaced,
        ..DE_DE
    },
    FR_FR,
    Conventions {
        tag: "fr-CA",
        group: NBSP,
        symbols: "USD $\u{a0}US|EUR €|GBP £|JPY ¥|CNY CN¥|CAD $|AUD $\u{a0}AU|NZD $\u{a0}NZ|HKD $\u{a0}HK|BRL R$",
        ..FR_FR
    },
    ES_ES,
    Conventions {
        tag: "es-MX",
        symbols: "MXN $",
        ..EN_US
    },
    Conventions {
        tag: "it-IT",
        symbols: "EUR €|GBP £|CNY CN¥|CAD CA$|AUD A$|NZD NZ$",
        ..ES_ES
    },
    NL_NL,
    PT_BR,
    Conventions {
        tag: "pt-PT",
        group: NBSP,
        grouped_from: 5,
        placement: Placement::After,
        ..PT_BR
    },
    Conventions {
        tag: "ja-JP",
        symbols: "USD $|EUR €|GBP £|JPY ￥|CNY 元|INR ₹|KRW ₩|CAD CA$|AUD A$|NZD NZ$|HKD HK$|MXN MX$|BRL R$",
        ..EN_US
    },
    SV_SE,
    Conventions {
        tag: "da-DK",
        symbols: "USD US$|EUR €|GBP £|JPY JP¥|CNY CN¥|INR ₹|KRW ₩|CAD CA$|AUD AU$|NZD NZ$|HKD HK$|MXN MX$|BRL R$|DKK kr.",
        ..DE_DE
    },
    Conventions {
        tag: "nb-NO",
        symbols: "EUR €|GBP £|NOK kr",
        ..SV_SE
    },
    Conventions {
        tag: "pl-PL",
        grouped_from: 5,
        minus: "-",
        symbols: "EUR €|BRL R$|PLN zł",
        ..SV_SE
    },
    Conventions {
        tag: "fi-FI",
        symbols: "USD $|EUR €|GBP £|JPY ¥",
        ..SV_SE
    },
];

/// Tags written as another's: (tag, the listed tag whose conventions it shares).
const SAME_AS: &[(&str, &str)] = &[("en-IE", "en-GB"), ("no", "nb")];

/// A locale fulfilld knows how to write money in; `en-US` unless `LOCALE` says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locale(&'static Conventions);

impl Default for Locale {
    fn default() -> Self {
        Self(&LOCALES[0])
    }
}

impl Locale {
    /// Reads a BCP 47 tag, `language` or `language-REGION` (`de`, `de-DE`, `pt-PT`), in
    /// any case. Refuses other shapes, and languages without conventions here.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let tag = raw.trim();
        let (language, region) = tag.split_once('-').unwrap_or((tag, ""));
        let letters = |part: &str, lengths: &[usize]| {
            lengths.contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphabetic())
        };
        let region_ok = region.is_empty()
            || letters(region, &[2])
            || (region.len() == 3 && region.bytes().all(|b| b.is_ascii_digit()));
        if !letters(language, &[2, 3]) || !region_ok {
            return Err(format!(
                "{raw:?} is not a language tag like en-US, de-DE or ja-JP"
            ));
        }
        let listed = |tag: &str| {
            let tag = same_as(tag);
            LOCALES.iter().find(|c| c.tag.eq_ignore_ascii_case(tag))
        };
        let spoken = |language: &str| {
            let language = same_as(language);
            LOCALES
                .iter()
                .find(|c| c.language().eq_ignore_ascii_case(language))
        };
        listed(tag)
            .or_else(|| spoken(language))
            .map(Self)
            .ok_or_else(|| {
                format!(
                    "no money conventions for the language {language:?}; known: {}",
                    languages().join(", ")
                )
            })
    }

    /// The listed locale whose conventions this one follows, e.g. `de-DE` for `de-CH`.
    pub fn tag(self) -> &'static str {
        self.0.tag
    }

    pub(super) fn conventions(self) -> &'static Conventions {
        self.0
    }

    /// Every locale listed.
    #[cfg(test)]
    pub(super) fn listed() -> impl Iterator<Item = Locale> {
        LOCALES.iter().map(Self)
    }
}

impl Conventions {
    fn language(&self) -> &'static str {
        self.tag.split('-').next().unwrap_or(self.tag)
    }

    /// The locale's symbol for `code` (upper case), or `None` to write the code.
    pub(super) fn symbol(&self, code: &str) -> Option<&'static str> {
        self.symbols
            .split('|')
            .find_map(|pair| pair.strip_prefix(code)?.strip_prefix(' '))
    }
}

/// The tag `tag` is written as, when [`SAME_AS`] lists it.
fn same_as(tag: &str) -> &str {
    SAME_AS
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(tag))
        .map_or(tag, |(_, same)| same)
}

/// The languages with conventions, each once.
fn languages() -> Vec<&'static str> {
    let mut languages: Vec<&str> = LOCALES.iter().map(Conventions::language).collect();
    languages.dedup();
    languages
}

#[cfg(test)]
mod tests {
    use super::Locale;

    fn tag(raw: &str) -> Result<&'static str, String> {
        Locale::parse(raw).map(Locale::tag)
    }

    #[test]
    fn tags_are_read_in_any_case_and_unlisted_regions_get_their_language() {
        assert_eq!(Locale::default().tag(), "en-US");
        assert_eq!(tag("en-US"), Ok("en-US"));
        assert_eq!(tag(" EN-gb "), Ok("en-GB"));
        assert_eq!(tag("en-IE"), Ok("en-GB"));
        assert_eq!(tag("de"), Ok("de-DE"));
        assert_eq!(tag("de-CH"), Ok("de-DE"));
        assert_eq!(tag("pt"), Ok("pt-BR"));
        assert_eq!(tag("no-NO"), Ok("nb-NO"));
        assert_eq!(tag("es-419"), Ok("es-ES"));
    }

    #[test]
    fn malformed_tags_and_unknown_languages_are_refused() {
        for raw in ["", "english", "en_US", "en-US-x-foo", "e1-US", "en-USA"] {
            assert!(
                tag(raw).unwrap_err().contains("not a language tag"),
                "{raw}"
            );
        }
        let unknown = tag("zz-ZZ").unwrap_err();
        assert!(
            unknown.contains("\"zz\"") && unknown.contains("en, de, fr"),
            "{unknown}"
        );
    }
}
