//! The one canonical phone-number function.

/// The `phone` target: `normalize` never panics; what it accepts is canonical E.164 (`+`, at
/// most 15 digits; some countries' numbers have 7 in all) and normalizes to itself.
pub fn normalize(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(number) = callvault_core::normalize(text) else {
        return;
    };
    let canonical = number.as_str();
    let digits = canonical
        .strip_prefix('+')
        .unwrap_or_else(|| panic!("{text:?} normalized to {canonical:?}, without '+'"));
    assert!(
        (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()),
        "{text:?} normalized to {canonical:?}, which is not E.164"
    );
    assert_eq!(
        callvault_core::normalize(canonical).as_ref(),
        Ok(&number),
        "{text:?} normalized to {canonical:?}, which does not normalize to itself"
    );
}
