//! Identifier normalisation, shared by identity resolution and the SQL
//! functions `normalize_email`, `normalize_phone` and `normalize_id`.
//!
//! Values are made comparable before matching: emails trimmed and
//! lower-cased (and required to look like an address), phones parsed to
//! E.164 with a default country (`phonenumber`), other identifiers trimmed.
//! Empty and whitespace-only strings become `None`.

pub use phonenumber::country::Id as Country;
use serde::{Deserialize, Serialize};

/// How the values of one identifier type are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Trim and lower-case; must contain one `@` with text on both sides.
    Email,
    /// Parse as a phone number (default country applies) and format E.164.
    Phone,
    /// Trim only.
    Text,
    /// Trim and lower-case (hashed emails, device ids in mixed case).
    Lowercase,
}

/// Normalise `raw` the way `kind` says; `None` when nothing usable is left.
pub fn normalize(kind: Normalize, raw: &str, default_country: Country) -> Option<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return None;
    }
    match kind {
        Normalize::Text => Some(trimmed.to_string()),
        Normalize::Lowercase => Some(trimmed.to_lowercase()),
        Normalize::Email => email(trimmed),
        Normalize::Phone => phone(trimmed, default_country),
    }
}

/// [`normalize`] without an allocation when `raw` is already normal (the
/// common case on the refresh's hot path).
pub fn normalize_cow(
    kind: Normalize,
    raw: &str,
    default_country: Country,
) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    let trimmed = raw.trim();
    match kind {
        _ if trimmed.is_empty() => None,
        Normalize::Text => Some(Cow::Borrowed(trimmed)),
        Normalize::Lowercase if !trimmed.chars().any(char::is_uppercase) => {
            Some(Cow::Borrowed(trimmed))
        }
        _ => normalize(kind, trimmed, default_country).map(Cow::Owned),
    }
}

/// `" Jane.Doe@Example.com "` → `jane.doe@example.com`.
pub fn email(raw: &str) -> Option<String> {
    let value = raw.trim().to_lowercase();
    let (local, domain) = value.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') || value.contains(' ') {
        return None;
    }
    Some(value)
}

/// `"06.12.34.56.78"` (default country FR) → `+33612345678`.
pub fn phone(raw: &str, default_country: Country) -> Option<String> {
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')' | '/'))
        .collect();
    // "0033..." is the international prefix spelled out.
    let cleaned = match cleaned.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => cleaned,
    };
    let number = phonenumber::parse(Some(default_country), &cleaned).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    Some(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// Parse a country code like `FR` for the default phone country.
pub fn country(code: &str) -> Option<Country> {
    code.trim().to_uppercase().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            email(" Jane.Doe@Example.COM ").as_deref(),
            Some("jane.doe@example.com")
        );
        assert_eq!(email("null"), None);
        assert_eq!(email("@x.com"), None);
        assert_eq!(email("a@"), None);
        assert_eq!(normalize(Normalize::Email, "   ", Country::FR), None);
    }

    #[test]
    fn every_french_spelling_of_one_mobile_is_one_e164_number() {
        for raw in [
            "+33612345678",
            "0612345678",
            "+33 6 12 34 56 78",
            "06.12.34.56.78",
            "0033612345678",
        ] {
            assert_eq!(
                phone(raw, Country::FR).as_deref(),
                Some("+33612345678"),
                "{raw}"
            );
        }
        assert_eq!(phone("0", Country::FR), None);
        assert_eq!(phone("0000000000", Country::FR), None);
        assert_eq!(phone("undefined", Country::FR), None);
    }

    #[test]
    fn text_identifiers_are_trimmed_and_empty_is_null() {
        assert_eq!(
            normalize(Normalize::Text, "  C001 ", Country::FR).as_deref(),
            Some("C001")
        );
        assert_eq!(normalize(Normalize::Text, "", Country::FR), None);
        assert_eq!(
            normalize(Normalize::Lowercase, " AbC ", Country::FR).as_deref(),
            Some("abc")
        );
    }
}
