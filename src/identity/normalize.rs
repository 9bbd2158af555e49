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
    /// Exactly as sent, spaces included (only an empty value is none).
    Exact,
    /// The digits only (`"0612-34 56"` → `"06123456"`; none without one):
    /// card and account numbers written with separators.
    Digits,
}

/// What becomes of a value its rule cannot normalise (an email without
/// `@`, a phone number that does not parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invalid {
    /// It links nothing, and is counted (`system.refreshes.refused_values`).
    #[default]
    Refuse,
    /// It is kept as sent (trimmed) and links like any value.
    Keep,
}

/// [`normalize`], then what `invalid` says for a value it refuses.
pub fn normalize_or(
    kind: Normalize,
    invalid: Invalid,
    raw: &str,
    default_country: Country,
) -> Option<String> {
    normalize(kind, raw, default_country).or_else(|| match invalid {
        Invalid::Keep => Some(raw.trim()).filter(|v| !v.is_empty()).map(String::from),
        Invalid::Refuse => None,
    })
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
        Normalize::Exact => Some(raw.to_string()),
        Normalize::Digits => {
            let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
            (!digits.is_empty()).then_some(digits)
        }
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
        Normalize::Exact => Some(Cow::Borrowed(raw)),
        Normalize::Lowercase if !trimmed.chars().any(char::is_uppercase) => {
            Some(Cow::Borrowed(trimmed))
        }
        _ => normalize(kind, trimmed, default_country).map(Cow::Owned),
    }
}

/// The identifier a raw value makes under a type's rule, as identity
/// resolution reads it: `Ok(None)` when the value is blank, `Err(Refused)`
/// when the rule refuses it (and `invalid` says not to keep it).
pub fn identifier(
    kind: Normalize,
    invalid: Invalid,
    raw: &str,
    default_country: Country,
) -> Result<Option<std::borrow::Cow<'_, str>>, Refused> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    match normalize_cow(kind, raw, default_country) {
        Some(value) => Ok(Some(value)),
        None => match normalize_or(kind, invalid, raw, default_country) {
            Some(kept) => Ok(Some(std::borrow::Cow::Owned(kept))),
            None => Err(Refused),
        },
    }
}

/// The value at a path of keys inside a JSON text; `None` when the text is
/// not JSON or a key is missing. Shared by SQL's `json_get_str` and the
/// identity sources read from JSON columns.
pub fn json_at<'a>(
    json: &str,
    path: impl IntoIterator<Item = &'a str>,
) -> Option<serde_json::Value> {
    let mut value: serde_json::Value = serde_json::from_str(json).ok()?;
    for key in path {
        value = value.get_mut(key)?.take();
    }
    Some(value)
}

/// The text or number at `path` of a JSON text (an identifier source's
/// `json_path`); `None` when absent or of another JSON type.
pub fn at_json_path(json: &str, path: &[String]) -> Option<String> {
    match json_at(json, path.iter().map(String::as_str))? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A value an identifier rule refused (counted, never linked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

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
    fn exact_keeps_everything_and_digits_keeps_only_digits() {
        let fr = Country::FR;
        assert_eq!(
            normalize(Normalize::Exact, " A-1 ", fr).as_deref(),
            Some(" A-1 ")
        );
        assert_eq!(normalize(Normalize::Exact, "  ", fr), None);
        assert_eq!(
            normalize(Normalize::Digits, " 4970 1234-56 ", fr).as_deref(),
            Some("4970123456")
        );
        assert_eq!(normalize(Normalize::Digits, "n/a", fr), None);
        assert_eq!(
            normalize_or(Normalize::Phone, Invalid::Keep, " 9123456789 ", fr).as_deref(),
            Some("9123456789")
        );
        assert_eq!(
            normalize_or(Normalize::Phone, Invalid::Refuse, "9123456789", fr),
            None
        );
        assert_eq!(
            normalize_cow(Normalize::Exact, " x ", fr).as_deref(),
            Some(" x ")
        );
    }

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
