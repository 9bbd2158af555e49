//! The segment builder: conditions a marketer picks in a form, turned
//! into the SQL of a saved segment (`analytics.<name>`), shown before it
//! is saved so an analyst can read it. Column names come from a fixed
//! list; values are SQL literals (quotes doubled, numbers parsed).

use serde::Deserialize;

use crate::identity::consent::ConsentConfig;

/// Profile traits a condition may test, and whether they are numbers.
pub(super) const TRAITS: &[(&str, bool)] = &[
    ("city", false),
    ("country", false),
    ("loyalty_tier", false),
    ("preferred_channel", false),
    ("orders", true),
    ("net_orders", true),
    ("net_revenue", true),
    ("avg_order_value", true),
    ("events", true),
    ("page_views", true),
    ("last_nps", true),
    ("last_csat", true),
];

/// Comparison operators.
pub(super) const OPERATORS: &[&str] = &["=", "<>", ">", ">=", "<", "<=", "contains"];

/// RFM segment names (`rfm_segment`).
pub(super) const RFM_SEGMENTS: &[&str] = &[
    "Champions",
    "Loyal Customers",
    "Potential Loyalists",
    "New Customers",
    "Promising",
    "Need Attention",
    "About To Sleep",
    "At Risk",
    "Can't Lose Them",
    "Hibernating",
    "Lost",
];

/// How many trait conditions the form offers.
pub(super) const TRAIT_ROWS: usize = 3;

/// The builder's form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct Form {
    pub name: String,
    pub purpose: String,
    pub t1_field: String,
    pub t1_op: String,
    pub t1_value: String,
    pub t2_field: String,
    pub t2_op: String,
    pub t2_value: String,
    pub t3_field: String,
    pub t3_op: String,
    pub t3_value: String,
    pub rfm: String,
    pub nps: String,
    pub consent: String,
    pub event_min: String,
    pub event_name: String,
    pub event_days: String,
    pub action: String,
    pub csrf: String,
}

impl Form {
    /// The trait conditions: (field, operator, value).
    pub(super) fn traits(&self) -> [(&str, &str, &str); TRAIT_ROWS] {
        [
            (&self.t1_field, &self.t1_op, &self.t1_value),
            (&self.t2_field, &self.t2_op, &self.t2_value),
            (&self.t3_field, &self.t3_op, &self.t3_value),
        ]
        .map(|(f, o, v)| (f.as_str(), o.as_str(), v.as_str()))
    }
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The SELECT the form describes, or what is wrong with it.
pub(super) fn sql(form: &Form, consent: &ConsentConfig) -> Result<String, String> {
    let mut conditions = Vec::new();
    for (i, (field, op, value)) in form.traits().into_iter().enumerate() {
        if field.is_empty() {
            continue;
        }
        let Some(&(field, number)) = TRAITS.iter().find(|(t, _)| *t == field) else {
            return Err(format!("condition {}: unknown trait '{field}'", i + 1));
        };
        let Some(op) = OPERATORS.iter().find(|o| **o == op) else {
            return Err(format!("condition {}: unknown operator", i + 1));
        };
        let value = value.trim();
        let condition = match (*op, number) {
            ("contains", true) => {
                return Err(format!("condition {}: {field} is a number", i + 1));
            }
            ("contains", false) => format!(
                "lower(p.{field}) LIKE {}",
                literal(&format!("%{}%", value.to_lowercase()))
            ),
            (op, true) => {
                let n: f64 = value.parse().map_err(|_| {
                    format!("condition {}: {field} needs a number, not '{value}'", i + 1)
                })?;
                format!("p.{field} {op} {n}")
            }
            (op, false) => format!("p.{field} {op} {}", literal(value)),
        };
        conditions.push(condition);
    }
    let rfm = !form.rfm.is_empty();
    if rfm {
        if !RFM_SEGMENTS.contains(&form.rfm.as_str()) {
            return Err(format!("unknown RFM segment '{}'", form.rfm));
        }
        conditions.push(format!("r.segment = {}", literal(&form.rfm)));
    }
    match form.nps.as_str() {
        "" => {}
        "promoter" => conditions.push("p.last_nps >= 9".into()),
        "passive" => conditions.push("p.last_nps BETWEEN 7 AND 8".into()),
        "detractor" => conditions.push("p.last_nps <= 6".into()),
        other => return Err(format!("unknown NPS category '{other}'")),
    }
    if !form.consent.is_empty() {
        if !consent.is_purpose(&form.consent) {
            return Err(format!("unknown consent purpose '{}'", form.consent));
        }
        let admits = consent.admits_sql(&form.consent, &format!("p.consent_{}", form.consent));
        conditions.push(format!("coalesce({admits}, false)"));
    }
    if !form.event_min.trim().is_empty() {
        let min: u32 = form
            .event_min
            .trim()
            .parse()
            .map_err(|_| "events: the count must be a whole number".to_string())?;
        let days: u32 = form
            .event_days
            .trim()
            .parse()
            .map_err(|_| "events: the window must be a number of days".to_string())?;
        let name = match form.event_name.trim() {
            "" => String::new(),
            name => format!(" AND e.event = {}", literal(name)),
        };
        conditions.push(format!(
            "p.profile_id IN (SELECT l.profile_id FROM raw.events e JOIN cdp.identity_links l \
             ON l.id_type = 'anonymous_id' AND l.id_value = lower(trim(e.anonymous_id)) \
             WHERE e.timestamp >= now() - INTERVAL '{days} days'{name} \
             GROUP BY l.profile_id HAVING count(*) >= {min})"
        ));
    }
    if conditions.is_empty() {
        return Err("choose at least one condition".into());
    }
    let from = if rfm {
        "cdp.profiles p JOIN analytics.rfm r ON r.profile_id = p.profile_id"
    } else {
        "cdp.profiles p"
    };
    Ok(format!(
        "SELECT p.profile_id, p.emails, p.first_name, p.last_name FROM {from}\nWHERE {}",
        conditions.join("\n  AND ")
    ))
}

/// Whether `name` can name a saved segment (a plain SQL identifier).
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_become_sql_with_values_quoted_and_columns_from_the_list() {
        let form = Form {
            t1_field: "city".into(),
            t1_op: "=".into(),
            t1_value: "O'Hara".into(),
            t2_field: "net_revenue".into(),
            t2_op: ">=".into(),
            t2_value: "100".into(),
            rfm: "Champions".into(),
            nps: "promoter".into(),
            consent: "email_marketing".into(),
            ..Form::default()
        };
        let sql = sql(&form, &ConsentConfig::default()).unwrap();
        assert!(sql.contains("p.city = 'O''Hara'"), "{sql}");
        assert!(sql.contains("p.net_revenue >= 100"), "{sql}");
        assert!(sql.contains("JOIN analytics.rfm r"), "{sql}");
        assert!(sql.contains("r.segment = 'Champions'"), "{sql}");
        assert!(sql.contains("p.last_nps >= 9"), "{sql}");
        assert!(
            sql.contains("p.consent_email_marketing = 'granted'"),
            "{sql}"
        );
        let bad = Form {
            t1_field: "email; DROP".into(),
            t1_op: "=".into(),
            ..Form::default()
        };
        assert!(super::sql(&bad, &ConsentConfig::default()).is_err());
        let words = Form {
            t1_field: "orders".into(),
            t1_op: ">".into(),
            t1_value: "1 OR 1=1".into(),
            ..Form::default()
        };
        assert!(
            super::sql(&words, &ConsentConfig::default())
                .unwrap_err()
                .contains("needs a number")
        );
        assert!(super::sql(&Form::default(), &ConsentConfig::default()).is_err());
        assert!(valid_name("vip_2026") && !valid_name("Vip") && !valid_name("a-b"));
    }
}
