//! Phone numbers: parsed, validated and normalized to E.164 with the `phonenumber` crate
//! (a port of Google's libphonenumber and its metadata).

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use compact_str::CompactString;
use phonenumber::{Mode, country};
use serde::{Deserialize, Serialize};

/// A region (ISO 3166-1 alpha-2, as libphonenumber knows it) used for numbers written
/// without a leading `+`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region(country::Id);

impl Region {
    /// Parses "IN", "us", … ; `None` when libphonenumber has no metadata for it.
    pub fn parse(code: &str) -> Option<Self> {
        let upper = code.trim().to_ascii_uppercase();
        country::Id::from_str(&upper).ok().map(Region)
    }

    pub fn code(&self) -> &str {
        self.0.as_ref()
    }

    /// The country's name in English where we know it, else its code.
    pub fn name(&self) -> String {
        country_name(self.code())
    }

    fn id(self) -> country::Id {
        self.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Region, written with an international prefix, compact form (`+` and digits).
type ParseKey = (Region, bool, String);

/// Outcomes of [`PhoneNumber::parse`] by (region, international, digits). libphonenumber
/// costs ~10 µs per number, over half of it in `regex_cache` hashing each metadata pattern's
/// source text under a mutex on every match (see BENCHMARKS.md); people call the same numbers
/// again and chat platforms redeliver messages, so a bounded cache turns repeats into a lookup.
static PARSED: LazyLock<moka::sync::Cache<ParseKey, Result<PhoneNumber, String>>> =
    LazyLock::new(|| moka::sync::Cache::new(10_000));

/// A valid phone number in E.164 form ("+919876543210").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(CompactString);

/// Why a text is not a usable phone number. Its Display is shown to users and worded in
/// [`super::replies`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneError {
    NoNumber(String),
    Invalid { written: String, country: String },
}

impl std::error::Error for PhoneError {}

impl PhoneNumber {
    /// Parses a number as a person writes it ("+91 98765 43210", "098765 43210",
    /// "(415) 555-0100"), using `region` when there is no leading `+`.
    pub fn parse(written: &str, region: Region) -> Result<Self, PhoneError> {
        let written = written.trim();
        let digits = written.chars().filter(char::is_ascii_digit).count();
        if digits < 3 {
            return Err(PhoneError::NoNumber(written.to_owned()));
        }
        let international =
            written.trim_start_matches(['(', ' ']).starts_with('+') || written.starts_with("00");
        // Separators carry no meaning; libphonenumber's parser is stricter about them than
        // people are ("+91987-65-43-2-10"), so it gets the digits and the leading + only.
        let compact: String = if written.trim_start_matches(['(', ' ']).starts_with('+') {
            std::iter::once('+')
                .chain(written.chars().filter(char::is_ascii_digit))
                .collect()
        } else {
            written.chars().filter(char::is_ascii_digit).collect()
        };
        let key = (region, international, compact);
        let outcome = match PARSED.get(&key) {
            Some(outcome) => outcome,
            None => {
                let outcome = Self::parse_uncached(&key.2, region, international, written);
                PARSED.insert(key, outcome.clone());
                outcome
            }
        };
        outcome.map_err(|country| PhoneError::Invalid {
            written: written.to_owned(),
            country,
        })
    }

    /// libphonenumber's parse, validate and format; `Err(country)` names the country the
    /// number is invalid for.
    fn parse_uncached(
        compact: &str,
        region: Region,
        international: bool,
        written: &str,
    ) -> Result<Self, String> {
        // A number written with + is parsed without a default region: with one, the crate
        // applies that region's national prefix after the country code ("+98 179674" with
        // region US lost its 1 and turned invalid; found by cargo fuzz).
        let default = (!compact.starts_with('+')).then(|| region.id());
        let number = match phonenumber::parse(default, compact) {
            Ok(number) => number,
            Err(_) => {
                return Err(if international {
                    country_of_code(written).unwrap_or_else(|| "any country".to_owned())
                } else {
                    region.name()
                });
            }
        };
        if number.extension().is_some() || !number.is_valid() {
            return Err(match number.country().id() {
                Some(id) => country_name(id.as_ref()),
                None if international => country_of_code(written)
                    .unwrap_or_else(|| format!("country code +{}", number.code().value())),
                None => region.name(),
            });
        }
        Ok(Self(number.format().mode(Mode::E164).to_string().into()))
    }

    /// Accepts only an already-normalized E.164 string (used for config and storage).
    pub fn from_e164(e164: &str) -> Result<Self, PhoneError> {
        if !e164.starts_with('+') {
            return Err(PhoneError::NoNumber(e164.to_owned()));
        }
        let number = Self::parse(e164, Region(country::Id::US))?;
        if number.0 != e164 {
            return Err(PhoneError::NoNumber(e164.to_owned()));
        }
        Ok(number)
    }

    pub fn e164(&self) -> &str {
        &self.0
    }

    fn parsed(&self) -> Option<phonenumber::PhoneNumber> {
        phonenumber::parse(None, &self.0).ok()
    }

    /// Parses and classifies an example number of `region` once, so libphonenumber's
    /// metadata is loaded and that region's patterns are compiled at start, not while the
    /// first person waits (it took ~10 ms of the first slash-command acks; BENCHMARKS.md).
    pub fn warm_up(region: Region) {
        let id = region.id();
        let metadata = phonenumber::metadata::DATABASE.by_id(id.as_ref());
        let example = metadata
            .and_then(|m| m.descriptors().mobile().or(m.descriptors().fixed_line()))
            .and_then(|d| d.example());
        if let Some(Ok(number)) = example.map(|e| Self::parse(e, region)) {
            let _ = (number.display(), number.region(), number.number_type());
        }
    }

    /// Human form, international: "+91 98765 43210".
    pub fn display(&self) -> String {
        self.parsed()
            .map(|n| n.format().mode(Mode::International).to_string())
            .unwrap_or_else(|| self.0.to_string())
    }

    /// The region the number belongs to ("IN"), if libphonenumber can tell.
    pub fn region(&self) -> Option<Region> {
        self.parsed().and_then(|n| n.country().id()).map(Region)
    }

    /// libphonenumber's classification (mobile, fixed line, premium rate, …).
    pub fn number_type(&self) -> phonenumber::Type {
        self.parsed()
            .map(|n| n.number_type(&phonenumber::metadata::DATABASE))
            .unwrap_or(phonenumber::Type::Unknown)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = PhoneError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::from_e164(&value)
    }
}

impl From<PhoneNumber> for String {
    fn from(value: PhoneNumber) -> Self {
        value.0.into_string()
    }
}

/// "+91 12345" → "India" (by the calling code's main region).
fn country_of_code(written: &str) -> Option<String> {
    let digits: String = written
        .trim_start_matches('+')
        .trim_start_matches("00")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    (1..=3).find_map(|len| {
        let code: u16 = digits.get(..len)?.parse().ok()?;
        let meta = phonenumber::metadata::DATABASE.by_code(&code)?;
        let main = meta.into_iter().next()?;
        Some(country_name(main.id()))
    })
}

/// The region's name in English ("Guernsey", "the United Kingdom"); its code only if
/// neither ISO 3166-1 nor the table's extras know it.
fn country_name(code: &str) -> String {
    super::countries::name(code).map_or_else(|| code.to_owned(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn india() -> Region {
        Region::parse("IN").unwrap()
    }

    #[test]
    fn national_and_international_forms_normalize_to_e164() {
        for written in [
            "+91 98765 43210",
            "098765 43210",
            "9876543210",
            "+91-9876-543-210",
        ] {
            assert_eq!(
                PhoneNumber::parse(written, india()).unwrap().e164(),
                "+919876543210",
                "{written}"
            );
        }
    }

    #[test]
    fn international_numbers_do_not_depend_on_the_default_region() {
        // Found by cargo fuzz: with region US the crate stripped the 1 after +98.
        for region in ["US", "IN", "GB", "IR"] {
            let region = Region::parse(region).unwrap();
            let n = PhoneNumber::parse("+98 179674", region).unwrap();
            assert_eq!(n.e164(), "+98179674");
            assert_eq!(PhoneNumber::from_e164(n.e164()).unwrap(), n);
        }
    }

    #[test]
    fn short_number_is_invalid_for_its_country() {
        let err = PhoneNumber::parse("+91 12345", india()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "+91 12345 is not a valid number for India."
        );
    }

    #[test]
    fn display_is_human() {
        let n = PhoneNumber::parse("+919876543210", india()).unwrap();
        assert_eq!(n.display(), "+91 98765 43210");
        assert_eq!(n.region().unwrap().code(), "IN");
    }

    #[test]
    fn unknown_region_is_none() {
        assert!(Region::parse("XX").is_none());
        assert!(Region::parse("us").is_some());
    }

    #[test]
    fn every_region_libphonenumber_knows_has_a_name_in_words() {
        let mut named = 0;
        for meta in phonenumber::metadata::DATABASE.iter() {
            let id = meta.id();
            // "001" holds the non-geographic services (+800, +808, …): no country.
            if id == "001" {
                continue;
            }
            let name = country_name(id);
            assert!(
                name != id && name.chars().count() > 3,
                "region {id} has no name ({name:?})"
            );
            named += 1;
        }
        assert!(named > 240, "only {named} regions");
        assert_eq!(country_name("GG"), "Guernsey");
        assert_eq!(country_name("GB"), "the United Kingdom");
        assert_eq!(country_name("KR"), "South Korea");
    }

    #[test]
    fn the_country_table_is_sorted_for_binary_search() {
        let codes: Vec<_> = crate::core::countries::NAMES
            .iter()
            .map(|(c, _)| *c)
            .collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn from_e164_rejects_non_normalized() {
        assert!(PhoneNumber::from_e164("+14155550100").is_ok());
        assert!(PhoneNumber::from_e164("+1 415 555 0100").is_err());
        assert!(PhoneNumber::from_e164("4155550100").is_err());
    }
}
