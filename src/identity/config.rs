//! Identity-resolution settings: which identifier types exist, where their
//! values come from, how they are normalised, limited and prioritised, and
//! which values never link anyone. All of it is configuration
//! (`[identity]` in `panorama.toml`), with defaults that suit the raw
//! tables; adding an identifier type needs no rebuild.

use serde::{Deserialize, Serialize};

use super::normalize::{self, Normalize};
use crate::error::{Error, Result};
use crate::schema::RawTable;

/// One identifier type: `email`, `user_id`, a loyalty card number, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierType {
    pub name: String,
    pub normalize: Normalize,
    /// At most this many values of the type in one profile; a link that
    /// would exceed it is refused (and recorded).
    #[serde(default)]
    pub max_per_profile: Option<u32>,
    /// Lower links first: links through strong identifiers are made before
    /// links through weak ones, so limits keep the strong ones.
    pub priority: u32,
    /// What becomes of a value `normalize` cannot normalise: refused and
    /// counted (the default), or kept as sent.
    #[serde(default)]
    pub invalid: normalize::Invalid,
}

impl IdentifierType {
    /// `raw` normalised by this type's rule (see [`IdentifierType::invalid`]).
    pub fn normalize_value(&self, raw: &str, country: normalize::Country) -> Option<String> {
        normalize::normalize_or(self.normalize, self.invalid, raw, country)
    }
}

/// Where values of an identifier type are read: a column of a raw table, or
/// a path inside a JSON column (`column = "traits"`, `json_path = "email"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierSource {
    pub table: String,
    pub column: String,
    pub id_type: String,
    #[serde(default)]
    pub json_path: Option<String>,
}

/// The `[identity]` section of `panorama.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Country assumed for phone numbers written without a prefix (ISO code).
    pub default_country: String,
    /// Normalised values that never link anything.
    pub blocked_values: Vec<String>,
    /// Cardinality guard: a value seen with more than this many distinct
    /// values of one other type is ignored and reported.
    pub max_distinct_neighbours: u32,
    /// Anonymous-only profiles idle longer than this are left out of
    /// `cdp.profiles` (they stay in the lake and rejoin when they identify).
    pub anonymous_idle_days: u32,
    /// Trait survivorship: CRM `source` values, most trusted first.
    pub source_priority: Vec<String>,
    pub types: Vec<IdentifierType>,
    pub sources: Vec<IdentifierSource>,
    /// An incremental refresh writes only the profiles it changed, as a
    /// layer on top of the views; after this many layers the next refresh
    /// writes the views whole again (a compaction), so reads stay quick.
    pub max_delta_layers: u32,
    /// ... and it writes them whole when it would change more than this
    /// share of the profiles anyway (0 = always whole, 1 = never by share).
    pub max_delta_share: f64,
    /// From this many profiles to write on, `cdp.profiles` (whole or a
    /// layer) is built as two files on two threads.
    pub parallel_profiles_from: usize,
    /// Declared `types` and `sources` replace the built-in ones instead of
    /// adding to them (see [`IdentityConfig::with_builtins`]).
    pub replace_defaults: bool,
    /// `[consent]` (a section of its own in `panorama.toml`, copied here
    /// when the file is read): the purposes the profiles answer.
    #[serde(skip)]
    pub consent: super::consent::ConsentConfig,
    /// `[retention]` (its own section too, copied here likewise): how long
    /// rows are kept.
    #[serde(skip)]
    pub retention: super::retention::RetentionConfig,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        let id_type = |name: &str, normalize, max_per_profile, priority| IdentifierType {
            name: name.into(),
            normalize,
            max_per_profile,
            priority,
            invalid: normalize::Invalid::Refuse,
        };
        let source = |table: &str, column: &str, id_type: &str| IdentifierSource {
            table: table.into(),
            column: column.into(),
            id_type: id_type.into(),
            json_path: None,
        };
        IdentityConfig {
            default_country: "FR".into(),
            blocked_values: [
                "null",
                "undefined",
                "none",
                "0",
                "n/a",
                "na",
                "unknown",
                "anonymous",
                "test",
                "test@test.com",
                "none@none.com",
                "noreply@example.com",
                "email@example.com",
                "00000000-0000-0000-0000-000000000000",
            ]
            .map(String::from)
            .to_vec(),
            max_distinct_neighbours: 50,
            anonymous_idle_days: 90,
            source_priority: vec!["crm".into(), "web_form".into()],
            types: vec![
                id_type("customer_id", Normalize::Text, Some(1), 0),
                id_type("user_id", Normalize::Text, Some(1), 1),
                id_type("email", Normalize::Email, None, 2),
                id_type("phone", Normalize::Phone, None, 3),
                id_type("anonymous_id", Normalize::Lowercase, None, 4),
            ],
            sources: vec![
                source("events", "anonymous_id", "anonymous_id"),
                source("events", "user_id", "user_id"),
                source("events", "previous_id", "anonymous_id"),
                source("events", "email", "email"),
                source("customers", "customer_id", "customer_id"),
                source("customers", "email", "email"),
                source("customers", "phone", "phone"),
                source("orders", "customer_id", "customer_id"),
                source("orders", "email", "email"),
                source("orders", "anonymous_id", "anonymous_id"),
                source("survey_responses", "customer_id", "customer_id"),
                source("survey_responses", "email", "email"),
                source("survey_responses", "anonymous_id", "anonymous_id"),
                source("consents", "customer_id", "customer_id"),
                source("consents", "email", "email"),
                source("consents", "anonymous_id", "anonymous_id"),
            ],
            max_delta_layers: 8,
            max_delta_share: 0.3,
            parallel_profiles_from: 32 * 1024,
            replace_defaults: false,
            consent: Default::default(),
            retention: Default::default(),
        }
    }
}

impl IdentityConfig {
    /// The declared types and sources added to the built-in ones, as
    /// `panorama.toml` means them (unless `replace_defaults = true`): a
    /// declared type named like a built-in one replaces it, a declared
    /// source is added unless already built in.
    pub fn with_builtins(mut self) -> IdentityConfig {
        if self.replace_defaults {
            return self;
        }
        let builtin = IdentityConfig::default();
        let mut types = builtin.types;
        for declared in self.types {
            match types.iter_mut().find(|t| t.name == declared.name) {
                Some(t) => *t = declared,
                None => types.push(declared),
            }
        }
        let mut sources = builtin.sources;
        for declared in self.sources {
            if !sources.contains(&declared) {
                sources.push(declared);
            }
        }
        self.types = types;
        self.sources = sources;
        self
    }

    /// Check cross-field rules: every source names a known table, column and
    /// identifier type; the default country is real; names are unique.
    /// The tables a lake declares (in its own records, made by `CREATE
    /// TABLE raw.…` over SQL) are known once the lake is open.
    pub fn validate(&self) -> Result<()> {
        self.validate_settings()?;
        for s in &self.sources {
            let Some(table) = RawTable::from_name(&s.table) else {
                return Err(Error::Config(format!(
                    "[identity] source table '{}' is not a raw table (neither built in, nor \
                     declared in [tables.{}] of panorama.toml, nor created in this lake by \
                     CREATE TABLE raw.{} over SQL)",
                    s.table, s.table, s.table
                )));
            };
            if table.file_schema().field_with_name(&s.column).is_err() {
                return Err(Error::Config(format!(
                    "[identity] raw.{} has no column '{}'",
                    s.table, s.column
                )));
            }
        }
        Ok(())
    }

    /// [`IdentityConfig::validate`] but for the sources' tables and
    /// columns: what can be checked when `panorama.toml` is read, before a
    /// lake is open.
    pub fn validate_settings(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(format!("[identity] {msg}")));
        if normalize::country(&self.default_country).is_none() {
            return bad(format!(
                "default_country '{}' is not an ISO country code",
                self.default_country
            ));
        }
        for (i, t) in self.types.iter().enumerate() {
            if self.types[..i].iter().any(|o| o.name == t.name) {
                return bad(format!("identifier type '{}' is declared twice", t.name));
            }
            if t.max_per_profile == Some(0) {
                return bad(format!(
                    "max_per_profile of '{}' must be at least 1",
                    t.name
                ));
            }
        }
        for s in &self.sources {
            if !self.types.iter().any(|t| t.name == s.id_type) {
                return bad(format!(
                    "source raw.{}.{} feeds unknown identifier type '{}'",
                    s.table, s.column, s.id_type
                ));
            }
        }
        if self.max_distinct_neighbours == 0 {
            return bad("max_distinct_neighbours must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.max_delta_share) {
            return bad(format!(
                "max_delta_share must be between 0 and 1, not {}",
                self.max_delta_share
            ));
        }
        Ok(())
    }

    /// The raw tables identifiers are read from, built-in or declared.
    pub fn source_tables(&self) -> std::collections::BTreeSet<RawTable> {
        self.sources
            .iter()
            .filter_map(|s| RawTable::from_name(&s.table))
            .collect()
    }

    /// The declared type called `name`.
    pub fn id_type(&self, name: &str) -> Option<&IdentifierType> {
        self.types.iter().find(|t| t.name == name)
    }

    /// The identifier sources of raw table `table`, strongest type first
    /// (`priority`, then configuration order), each as (its position in
    /// `sources`, the source, its type's position in `types`, the type):
    /// the order in which a row's identifiers are read.
    pub fn sources_of(
        &self,
        table: &str,
    ) -> Vec<(usize, &IdentifierSource, usize, &IdentifierType)> {
        let mut sources: Vec<_> = self
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.table == table)
            .filter_map(|(i, s)| {
                let t = self.types.iter().position(|t| t.name == s.id_type)?;
                Some((i, s, t, &self.types[t]))
            })
            .collect();
        sources.sort_by_key(|&(i, _, _, t)| (t.priority, i));
        sources
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        IdentityConfig::default().validate().unwrap();
    }

    #[test]
    fn a_user_declared_type_from_a_json_path_is_accepted() {
        let toml = r#"
            default_country = "BE"
            [[types]]
            name = "loyalty_card"
            normalize = "text"
            max_per_profile = 1
            priority = 0
            [[sources]]
            table = "events"
            column = "traits"
            json_path = "loyaltyCard"
            id_type = "loyalty_card"
        "#;
        let config: IdentityConfig = toml::from_str(toml).unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.id_type("loyalty_card").unwrap().max_per_profile,
            Some(1)
        );
    }

    /// Declared types and sources add to the built-in ones; a type named
    /// like a built-in one changes it; `replace_defaults` keeps only what
    /// is declared.
    #[test]
    fn declared_rules_add_to_the_built_in_ones_unless_replacing() {
        let toml = r#"
            [[types]]
            name = "loyalty_id"
            normalize = "text"
            priority = 1
            [[types]]
            name = "phone"
            normalize = "phone"
            max_per_profile = 2
            priority = 3
            [[sources]]
            table = "customers"
            column = "postal_code"
            id_type = "loyalty_id"
        "#;
        let added = toml::from_str::<IdentityConfig>(toml)
            .unwrap()
            .with_builtins();
        added.validate().unwrap();
        let builtin = IdentityConfig::default();
        assert_eq!(added.types.len(), builtin.types.len() + 1);
        assert_eq!(added.sources.len(), builtin.sources.len() + 1);
        assert!(added.sources.starts_with(&builtin.sources));
        assert_eq!(added.id_type("phone").unwrap().max_per_profile, Some(2));
        assert!(added.id_type("email").is_some());
        // Nothing declared: exactly the built-in rules.
        let plain = toml::from_str::<IdentityConfig>("")
            .unwrap()
            .with_builtins();
        assert_eq!(plain, builtin);

        let replaced =
            toml::from_str::<IdentityConfig>(&format!("replace_defaults = true\n{toml}"))
                .unwrap()
                .with_builtins();
        assert_eq!(replaced.types.len(), 2);
        assert_eq!(replaced.sources.len(), 1);
    }

    #[test]
    fn mistakes_are_named() {
        let mut config = IdentityConfig::default();
        config.sources[0].column = "nope".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("raw.events has no column 'nope'"), "{err}");
        let err = toml::from_str::<IdentityConfig>("colour = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }
}
