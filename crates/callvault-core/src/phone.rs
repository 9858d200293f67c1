//! The one canonical phone-number function. Registry entries and dialed digits both go through
//! [`normalize`], so a number registered as `(512) 555-0100` matches a call dialed as
//! `1-512-555-0100`. What does not normalize unambiguously is rejected, never guessed: a wrong
//! guess could record an attorney call.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest input considered, in characters. Real dialed strings are far shorter; the bound keeps
/// the parser's work small for hostile input.
pub const MAX_INPUT_CHARS: usize = 48;

/// E.164 allows at most 15 digits after the `+`.
const MAX_E164_DIGITS: usize = 15;

/// A phone number in canonical E.164 form, e.g. `+15125550100`. Only [`normalize`] makes one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    /// The canonical text, `+` then at most 15 digits (as few as 7, as in Niue's `+6834340`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for E164 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for E164 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let number = normalize(&text).map_err(serde::de::Error::custom)?;
        if number.0 != text {
            return Err(serde::de::Error::custom(format!(
                "{text:?} is not in canonical E.164 form (expected {number})"
            )));
        }
        Ok(number)
    }
}

/// Why a string is not a phone number callvault will act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Nothing but separators.
    #[error("no digits")]
    Empty,
    /// Longer than [`MAX_INPUT_CHARS`] characters or 15 E.164 digits.
    #[error("too long: at most {MAX_INPUT_CHARS} characters and 15 digits")]
    TooLong,
    /// Letters, as in vanity numbers (`1-800-FLOWERS`): their digits depend on the keypad.
    #[error("contains letters; spell vanity numbers out in digits")]
    Letters,
    /// `x123`, `ext. 123`, `;ext=123`: the extension is dialed after the call connects, so the
    /// number alone does not identify the party.
    #[error("contains an extension; register and dial the main number only")]
    Extension,
    /// Pauses, waits, `#`, `*`: digits sent after connecting or feature codes.
    #[error("contains post-dial digits or a feature code (',', ';', '#', '*', 'p', 'w')")]
    PostDial,
    /// A character that has no place in a phone number.
    #[error("unexpected character {0:?}")]
    InvalidCharacter(char),
    /// A `+` anywhere but at the start.
    #[error("'+' may only stand at the start")]
    MisplacedPlus,
    /// A national number that is not a full 10-digit NANP number (a 7-digit local number, say):
    /// its area code would have to be guessed.
    #[error(
        "incomplete number: give 10 digits with the area code, or the international form with '+'"
    )]
    Incomplete,
    /// The country calling code is not assigned.
    #[error("unknown country calling code")]
    UnknownCountry,
    /// The digits are not a valid number for the country's numbering plan.
    #[error("not a valid number in its country's numbering plan")]
    Invalid,
    /// A `tel:` URI with parameters other than an extension (e.g. `phone-context`).
    #[error("tel: URI parameters are not supported")]
    UriParameters,
}

/// Normalizes a number as dialed or as registered to canonical E.164.
///
/// Accepted: ASCII or full-width digits; spaces, dots, dashes, slashes and parentheses as
/// separators; a leading `+`; `tel:` URIs; the international prefixes `011` (NANP) and `00`; a
/// leading NANP trunk `1`. A number without `+` or an international prefix is read as NANP and
/// must have all 10 digits. Everything else is rejected with the reason.
pub fn normalize(input: &str) -> Result<E164, PhoneError> {
    if input.chars().count() > MAX_INPUT_CHARS {
        return Err(PhoneError::TooLong);
    }
    let text = input.trim();
    let text = strip_tel_uri(text)?;
    let (plus, digits) = scan(text)?;
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("011") {
        rest.to_string()
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else {
        nanp_national(&digits)?
    };
    if international.is_empty() {
        return Err(PhoneError::Empty);
    }
    if international.len() > MAX_E164_DIGITS {
        return Err(PhoneError::TooLong);
    }
    let candidate = format!("+{international}");
    let parsed = phonenumber::parse(None, &candidate).map_err(|err| match err {
        phonenumber::ParseError::InvalidCountryCode => PhoneError::UnknownCountry,
        phonenumber::ParseError::TooLong => PhoneError::TooLong,
        _ => PhoneError::Invalid,
    })?;
    if parsed.extension().is_some() {
        return Err(PhoneError::Extension);
    }
    if !phonenumber::is_valid(&parsed) {
        return Err(PhoneError::Invalid);
    }
    let canonical = parsed.format().mode(phonenumber::Mode::E164).to_string();
    Ok(E164(canonical))
}

/// Removes a `tel:` scheme. An `;ext=` parameter is an extension; any other parameter (notably
/// `phone-context`, which makes the number local to somewhere) is refused.
fn strip_tel_uri(text: &str) -> Result<&str, PhoneError> {
    let Some(prefix) = text.get(..4) else {
        return Ok(text);
    };
    if !prefix.eq_ignore_ascii_case("tel:") {
        return Ok(text);
    }
    let rest = &text[4..];
    let mut parts = rest.split(';');
    let number = parts.next().unwrap_or_default();
    match parts.next() {
        None => Ok(number),
        Some(param) => {
            let name = param.split_once('=').map_or(param, |(name, _)| name);
            if name.trim().eq_ignore_ascii_case("ext") {
                Err(PhoneError::Extension)
            } else {
                Err(PhoneError::UriParameters)
            }
        }
    }
}

/// Reads digits and a leading plus, skipping separators, and classifies anything else.
fn scan(text: &str) -> Result<(bool, String), PhoneError> {
    let lower = text.to_lowercase();
    if lower.contains("ext") || lower.contains('x') {
        return Err(PhoneError::Extension);
    }
    // `p` and `w` are pause and wait; any other letter means a vanity number.
    if lower
        .chars()
        .any(|c| c.is_alphabetic() && c != 'p' && c != 'w')
    {
        return Err(PhoneError::Letters);
    }
    let mut plus = false;
    let mut digits = String::with_capacity(16);
    for c in text.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '\u{FF10}'..='\u{FF19}' => {
                let value = c as u32 - 0xFF10;
                digits.push(char::from_digit(value, 10).expect("0..=9"));
            }
            '+' | '\u{FF0B}' => {
                if plus || !digits.is_empty() {
                    return Err(PhoneError::MisplacedPlus);
                }
                plus = true;
            }
            ' ' | '\t' | '\u{00A0}' | '\u{3000}' | '-' | '\u{2010}' | '\u{2011}' | '\u{2012}'
            | '\u{2013}' | '\u{FF0D}' | '.' | '\u{FF0E}' | '/' | '(' | ')' | '\u{FF08}'
            | '\u{FF09}' => {}
            ',' | ';' | '#' | '*' | 'p' | 'P' | 'w' | 'W' => return Err(PhoneError::PostDial),
            c => return Err(PhoneError::InvalidCharacter(c)),
        }
        if digits.len() > MAX_E164_DIGITS + 3 {
            return Err(PhoneError::TooLong);
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::Empty);
    }
    Ok((plus, digits))
}

/// A national (no `+`, no international prefix) number is NANP: 10 digits, or 11 with the trunk
/// prefix `1`. Anything shorter would need its area code guessed.
fn nanp_national(digits: &str) -> Result<String, PhoneError> {
    match digits.len() {
        10 => Ok(format!("1{digits}")),
        11 if digits.starts_with('1') => Ok(digits.to_string()),
        n if n >= 11 => Err(PhoneError::TooLong),
        _ => Err(PhoneError::Incomplete),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(input: &str) -> String {
        match normalize(input) {
            Ok(n) => n.to_string(),
            Err(e) => panic!("{input:?} rejected: {e}"),
        }
    }

    /// Found by the `phone` fuzz target: E.164 sets no lower bound of 8 digits; a country with
    /// four-digit subscriber numbers has 7-digit numbers, and they are valid.
    #[test]
    fn numbers_shorter_than_eight_digits_are_canonical_too() {
        assert_eq!(ok("00 683 4340"), "+6834340");
        assert_eq!(ok("+6834340"), "+6834340");
    }

    /// Real formatting variants of the same numbers all map to one canonical form.
    #[test]
    fn formatting_variants_map_to_one_canonical_form() {
        let austin = "+15125550100";
        let variants = [
            "(512) 555-0100",
            "512.555.0100",
            "512-555-0100",
            "512 555 0100",
            "5125550100",
            "+1 512 555 0100",
            "+1-512-555-0100",
            "+1 (512) 555-0100",
            "+15125550100",
            "1-512-555-0100",
            "1 (512) 555-0100",
            "1.512.555.0100",
            "15125550100",
            "011 1 512 555 0100",
            "0111 512 555 0100",
            "00 1 512 555 0100",
            "001-512-555-0100",
            "\u{FF15}\u{FF11}\u{FF12}\u{FF15}\u{FF15}\u{FF15}\u{FF10}\u{FF11}\u{FF10}\u{FF10}",
            "\u{FF0B}\u{FF11} \u{FF15}\u{FF11}\u{FF12} \u{FF15}\u{FF15}\u{FF15} \u{FF10}\u{FF11}\u{FF10}\u{FF10}",
            "  (512)555-0100  ",
            "512 . 555 . 0100",
            "5 1 2 5 5 5 0 1 0 0",
            "512/555-0100",
            "512\u{00A0}555\u{00A0}0100",
            "512\u{2011}555\u{2011}0100",
            "tel:+1-512-555-0100",
            "TEL:+15125550100",
            "tel:5125550100",
        ];
        assert!(variants.len() >= 25);
        for v in variants {
            assert_eq!(ok(v), austin, "variant {v:?}");
        }

        let london = "+442079460958";
        for v in [
            "+44 20 7946 0958",
            "+44 (0)20 7946 0958",
            "011 44 20 7946 0958",
            "0044 20 7946 0958",
            "+44-20-7946-0958",
        ] {
            assert_eq!(ok(v), london, "variant {v:?}");
        }
    }

    #[test]
    fn ambiguous_or_decorated_numbers_are_rejected_with_the_reason() {
        let cases: &[(&str, PhoneError)] = &[
            ("", PhoneError::Empty),
            ("   ", PhoneError::Empty),
            ("()-.", PhoneError::Empty),
            ("555-0100", PhoneError::Incomplete),
            ("512-555-010", PhoneError::Incomplete),
            ("1-800-FLOWERS", PhoneError::Letters),
            ("512-555-CALL", PhoneError::Letters),
            ("512-555-0100 x12", PhoneError::Extension),
            ("512-555-0100 ext. 12", PhoneError::Extension),
            ("tel:+1-512-555-0100;ext=12", PhoneError::Extension),
            (
                "tel:555-0100;phone-context=+1-512",
                PhoneError::UriParameters,
            ),
            ("512-555-0100,,12", PhoneError::PostDial),
            ("512-555-0100;12", PhoneError::PostDial),
            ("512-555-0100#", PhoneError::PostDial),
            ("*67 512-555-0100", PhoneError::PostDial),
            ("512-555-0100p12", PhoneError::PostDial),
            ("512-555-0100w12", PhoneError::PostDial),
            ("512+555-0100", PhoneError::MisplacedPlus),
            ("++15125550100", PhoneError::MisplacedPlus),
            ("+1 512 555 0100 1234 5678 90", PhoneError::TooLong),
            ("51255501001", PhoneError::TooLong),
            ("+999 1234 5678", PhoneError::UnknownCountry),
            ("+1 012 555 0100", PhoneError::Invalid),
            ("512_555_0100", PhoneError::InvalidCharacter('_')),
            ("512\u{0661}555", PhoneError::InvalidCharacter('\u{0661}')),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize(input).as_ref(), Err(expected), "input {input:?}");
        }
        let long = "1".repeat(MAX_INPUT_CHARS + 1);
        assert_eq!(normalize(&long), Err(PhoneError::TooLong));
    }

    #[test]
    fn canonical_form_deserializes_and_other_forms_do_not() {
        #[derive(Deserialize)]
        struct Holder {
            n: E164,
        }
        let good: Holder = toml::from_str("n = \"+15125550100\"").unwrap();
        assert_eq!(good.n.as_str(), "+15125550100");
        assert!(toml::from_str::<Holder>("n = \"(512) 555-0100\"").is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_any_string(s in "\\PC{0,60}") {
            let _ = normalize(&s);
        }

        #[test]
        fn never_panics_on_phone_like_strings(s in "[0-9+()\\-. x#*,;]{0,40}") {
            let _ = normalize(&s);
        }

        #[test]
        fn canonical_output_is_a_fixed_point(s in "[+]?[0-9 ().-]{7,20}") {
            if let Ok(n) = normalize(&s) {
                prop_assert_eq!(normalize(n.as_str()), Ok(n.clone()));
                prop_assert!(n.as_str().starts_with('+'));
                prop_assert!(n.as_str()[1..].chars().all(|c| c.is_ascii_digit()));
            }
        }

        #[test]
        fn ten_digit_nanp_numbers_in_any_layout_agree(
            area in 2u32..=9, rest in 0u32..=99, exch in 2u32..=9, ex2 in 0u32..=99, line in 0u32..=9999,
        ) {
            let plain = format!("{area}{rest:02}{exch}{ex2:02}{line:04}");
            let dotted = format!("({}) {}-{}", &plain[..3], &plain[3..6], &plain[6..]);
            let intl = format!("+1 {} {} {}", &plain[..3], &plain[3..6], &plain[6..]);
            let a = normalize(&plain);
            prop_assert_eq!(&a, &normalize(&dotted));
            prop_assert_eq!(&a, &normalize(&intl));
        }
    }
}
