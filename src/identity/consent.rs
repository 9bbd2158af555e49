//! Consent as a contract: the purposes a lake asks consent for (`[consent]`
//! in `panorama.toml`), which of them need an opt-in, how an SDK's consent
//! categories map to them, and what a profile's answer means.
//!
//! A profile's answer for a purpose is computed by the refresh from the
//! consent records of `raw.consents` and the consent preferences SDKs send
//! in events' `context` (Segment's `consent.categoryPreferences`,
//! RudderStack's `consentManagement`): the latest record wins. When two
//! profiles that answered differently merge — a cookie that said yes and a
//! CRM record that said no, joined later by a login — nobody can tell
//! which answer is the person's: the answer is [`CONFLICT`], which never
//! counts as granted, until the person answers again after the merge.
//! Precisely: each identifier that holds answers (the strongest identifier
//! of the records) keeps its latest one; if these disagree and all of them
//! are older than the moment the identifiers became linked (the first
//! sighting of the record that joined them), the answer is a conflict.
//! For a purpose that needs an opt-in (all of them unless listed in
//! `opt_out`), no answer means not granted.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The answer that lets a purpose use a person's data.
pub const GRANTED: &str = "granted";
/// The answer of a profile whose identifiers answered differently.
pub const CONFLICT: &str = "conflict";

/// `[consent]` in `panorama.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    /// The purposes consent is asked for; each is a `consent_<purpose>`
    /// column of `cdp.profiles`.
    pub purposes: Vec<String>,
    /// Purposes for which no answer counts as granted (legitimate
    /// interest, say); every other purpose needs an opt-in.
    pub opt_out: Vec<String>,
    /// An SDK's consent category (Segment) or consent id (RudderStack) →
    /// the purpose it answers. A category named like a purpose (any case)
    /// answers that purpose without being listed.
    pub sdk_categories: BTreeMap<String, String>,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        ConsentConfig {
            purposes: [
                "email_marketing",
                "sms_marketing",
                "ads",
                "analytics",
                "personalisation",
            ]
            .map(String::from)
            .to_vec(),
            opt_out: Vec::new(),
            sdk_categories: BTreeMap::new(),
        }
    }
}

impl ConsentConfig {
    /// Refuse names that cannot be a column and references to purposes
    /// that are not declared.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(format!("[consent] {msg}")));
        for p in &self.purposes {
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return bad(format!(
                    "purpose '{p}' must be lower-case letters, digits and '_'"
                ));
            }
        }
        for p in self.opt_out.iter().chain(self.sdk_categories.values()) {
            if !self.is_purpose(p) {
                return bad(format!(
                    "'{p}' is not one of the purposes ({})",
                    self.purposes.join(", ")
                ));
            }
        }
        Ok(())
    }

    pub fn is_purpose(&self, name: &str) -> bool {
        self.purposes.iter().any(|p| p == name)
    }

    /// Whether `purpose` needs an explicit grant.
    pub fn needs_opt_in(&self, purpose: &str) -> bool {
        !self.opt_out.iter().any(|p| p == purpose)
    }

    /// SQL condition on a profile's answer (the expression `answer`) that
    /// lets `purpose` use the profile; `purpose` must be declared.
    pub fn admits_sql(&self, purpose: &str, answer: &str) -> String {
        if self.needs_opt_in(purpose) {
            format!("{answer} = '{GRANTED}'")
        } else {
            format!("({answer} IS NULL OR {answer} = '{GRANTED}')")
        }
    }

    /// The purpose an SDK category answers, if any.
    fn purpose_of_category(&self, category: &str) -> Option<&str> {
        if let Some(p) = self.sdk_categories.get(category) {
            return Some(p);
        }
        self.purposes
            .iter()
            .find(|p| p.eq_ignore_ascii_case(category))
            .map(String::as_str)
    }

    /// The `(purpose, granted)` answers in an event's `context` JSON:
    /// Segment's `consent.categoryPreferences` (`{"Advertising": true}`)
    /// and RudderStack's `consentManagement` (`allowedConsentIds`,
    /// `deniedConsentIds`). Categories that answer no declared purpose are
    /// ignored; a context that is not JSON holds none.
    pub fn sdk_answers(&self, context: &str) -> Vec<(&str, bool)> {
        let mut answers = Vec::new();
        if !context.contains("onsent") {
            return answers;
        }
        let Ok(serde_json::Value::Object(context)) = serde_json::from_str(context) else {
            return answers;
        };
        if let Some(preferences) = context
            .get("consent")
            .and_then(|c| c.get("categoryPreferences"))
            .and_then(|p| p.as_object())
        {
            for (category, value) in preferences {
                if let (Some(purpose), Some(granted)) =
                    (self.purpose_of_category(category), value.as_bool())
                {
                    answers.push((purpose, granted));
                }
            }
        }
        if let Some(management) = context.get("consentManagement") {
            for (key, granted) in [("allowedConsentIds", true), ("deniedConsentIds", false)] {
                let ids = management.get(key).and_then(|v| v.as_array());
                for id in ids.into_iter().flatten() {
                    let id = match id {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    if let Some(purpose) = self.purpose_of_category(&id) {
                        answers.push((purpose, granted));
                    }
                }
            }
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_and_rudderstack_preferences_answer_declared_purposes() {
        let mut config = ConsentConfig::default();
        config.sdk_categories.insert("C0004".into(), "ads".into());
        let segment = r#"{"consent":{"categoryPreferences":{"Advertising":true,"Analytics":false,"Email_Marketing":true}}}"#;
        let mut got = config.sdk_answers(segment);
        got.sort();
        assert_eq!(got, [("analytics", false), ("email_marketing", true)]);
        let rudder = r#"{"consentManagement":{"allowedConsentIds":["C0004"],"deniedConsentIds":["analytics", 7]}}"#;
        assert_eq!(
            config.sdk_answers(rudder),
            [("ads", true), ("analytics", false)]
        );
        assert!(config.sdk_answers(r#"{"ip":"1.2.3.4"}"#).is_empty());
        assert!(config.sdk_answers("consent, not json").is_empty());
    }

    #[test]
    fn opt_in_purposes_need_a_grant_and_bad_names_are_refused() {
        let config = ConsentConfig {
            opt_out: vec!["analytics".into()],
            ..ConsentConfig::default()
        };
        config.validate().unwrap();
        assert_eq!(config.admits_sql("ads", "c"), "c = 'granted'");
        assert_eq!(
            config.admits_sql("analytics", "c"),
            "(c IS NULL OR c = 'granted')"
        );
        let unknown = ConsentConfig {
            opt_out: vec!["newsletters".into()],
            ..ConsentConfig::default()
        };
        assert!(
            unknown
                .validate()
                .unwrap_err()
                .to_string()
                .contains("'newsletters' is not one of the purposes")
        );
        let bad = ConsentConfig {
            purposes: vec!["Ads; DROP".into()],
            ..ConsentConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
