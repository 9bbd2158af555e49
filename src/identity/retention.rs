//! Storage limitation as configuration: `[retention]` in `panorama.toml`
//! says how long each raw table's rows are kept, and how long the rows of
//! visitors never identified (only anonymous ids, linked to nobody known)
//! are kept. The shipped `retention` job applies it every night
//! ([`crate::privacy::retain`]).
//!
//! ```toml
//! [retention]
//! events = "25 months"      # the default; "forever" keeps them
//! orders = "10 years"
//! anonymous = "13 months"   # the default: visitors never identified
//! ```

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Months, NaiveDate, Utc};
use serde::Deserialize;

use crate::schema::RawTable;

/// The key of `[retention]` for the rows of visitors never identified.
pub const ANONYMOUS: &str = "anonymous";

/// How long rows are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Days(u32),
    Months(u32),
    Forever,
}

impl Period {
    /// Read "25 months", "13 months", "90 days", "2 years", "1 year",
    /// "forever", or a bare number of days.
    pub fn parse(text: &str) -> Result<Period, String> {
        let text = text.trim().to_ascii_lowercase();
        if text == "forever" {
            return Ok(Period::Forever);
        }
        let (number, unit) = match text.split_once(char::is_whitespace) {
            Some((n, u)) => (n, u.trim()),
            None => (text.as_str(), "days"),
        };
        let n: u32 = number.parse().map_err(|_| {
            format!("'{text}' is not a period like \"25 months\", \"90 days\", \"2 years\" or \"forever\"")
        })?;
        match unit {
            "day" | "days" => Ok(Period::Days(n)),
            "month" | "months" => Ok(Period::Months(n)),
            "year" | "years" => Ok(Period::Months(n.saturating_mul(12))),
            other => Err(format!(
                "unknown unit '{other}' in '{text}' (days, months or years)"
            )),
        }
    }

    /// The first day kept at `now`: rows of an earlier day go (`None`:
    /// nothing goes).
    pub fn first_day_kept(self, now: DateTime<Utc>) -> Option<NaiveDate> {
        let today = now.date_naive();
        match self {
            Period::Days(n) => today.checked_sub_signed(chrono::Duration::days(i64::from(n))),
            Period::Months(n) => today.checked_sub_months(Months::new(n)),
            Period::Forever => None,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Days(n) => write!(f, "{n} days"),
            Period::Months(n) if n % 12 == 0 => write!(f, "{} years", n / 12),
            Period::Months(n) => write!(f, "{n} months"),
            Period::Forever => f.write_str("forever"),
        }
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Days(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Days(n) => Ok(Period::Days(n)),
            Raw::Text(t) => Period::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// `[retention]`: a period per raw table, and [`ANONYMOUS`]. Keys not
/// given keep their default (events 25 months, anonymous 13 months, every
/// other table forever).
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionConfig {
    pub tables: BTreeMap<RawTable, Period>,
    /// Rows whose identifiers are all anonymous ids that no known
    /// identifier (an email, a user id, …) is linked to.
    pub anonymous: Period,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            // 25 months: the longest the CNIL accepts for audience
            // measurement; 13 months: its limit for cookies.
            tables: BTreeMap::from([(RawTable::Events, Period::Months(25))]),
            anonymous: Period::Months(13),
        }
    }
}

impl<'de> Deserialize<'de> for RetentionConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let given = BTreeMap::<String, Period>::deserialize(d)?;
        let mut config = RetentionConfig::default();
        for (key, period) in given {
            if key == ANONYMOUS {
                config.anonymous = period;
                continue;
            }
            let table = RawTable::from_name(&key).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "[retention] {key}: not a raw table nor '{ANONYMOUS}' (tables: {})",
                    RawTable::ALL.map(|t| t.name()).join(", ")
                ))
            })?;
            config.tables.insert(table, period);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_read_as_people_write_them() {
        assert_eq!(Period::parse("25 months"), Ok(Period::Months(25)));
        assert_eq!(Period::parse("2 Years"), Ok(Period::Months(24)));
        assert_eq!(Period::parse("90"), Ok(Period::Days(90)));
        assert_eq!(Period::parse("forever"), Ok(Period::Forever));
        assert!(Period::parse("soon").unwrap_err().contains("not a period"));
        assert!(
            Period::parse("3 weeks")
                .unwrap_err()
                .contains("unit 'weeks'")
        );
        let now = "2026-03-31T12:00:00Z".parse().unwrap();
        assert_eq!(
            Period::Months(13).first_day_kept(now),
            NaiveDate::from_ymd_opt(2025, 2, 28)
        );
        assert_eq!(Period::Forever.first_day_kept(now), None);
    }

    #[test]
    fn given_keys_override_the_defaults_and_unknown_tables_are_refused() {
        let config: RetentionConfig =
            toml::from_str("orders = \"10 years\"\nanonymous = 400").unwrap();
        assert_eq!(config.tables[&RawTable::Events], Period::Months(25));
        assert_eq!(config.tables[&RawTable::Orders], Period::Months(120));
        assert_eq!(config.anonymous, Period::Days(400));
        let error = toml::from_str::<RetentionConfig>("event = 3").unwrap_err();
        assert!(error.to_string().contains("not a raw table"), "{error}");
    }
}
