//! The SQL that builds `cdp.profiles` from the new identity links and the
//! raw tables, generated from the identity configuration.
//!
//! Each raw row is attributed to a profile through its strongest identifier
//! (the configured sources of its table, by type priority), with the same
//! normalisation functions the graph used. Traits survive by source
//! priority then recency; computed traits are plain aggregates.

use super::config::IdentityConfig;
use crate::functions::normalizer_name;
use crate::schema::cdp::list_column;

/// Name of the new links table inside the refresh's private session.
pub const NEW_LINKS: &str = "panorama.public._refresh_links";

/// `profile_id` of each row of raw `table`, through its identifiers.
fn attributed(config: &IdentityConfig, table: &str, columns: &str) -> String {
    let mut sources: Vec<_> = config
        .sources
        .iter()
        .filter(|s| s.table == table && s.json_path.is_none())
        .filter_map(|s| config.id_type(&s.id_type).map(|t| (t, s)))
        .collect();
    sources.sort_by_key(|(t, s)| (t.priority, s.column.clone()));
    if sources.is_empty() {
        return format!(
            "SELECT CAST(NULL AS VARCHAR) AS profile_id, {columns} FROM raw.{table} WHERE false"
        );
    }
    let mut joins = String::new();
    let mut picks = Vec::new();
    for (i, (t, s)) in sources.iter().enumerate() {
        joins.push_str(&format!(
            " LEFT JOIN {NEW_LINKS} l{i} ON l{i}.id_type = '{}' AND l{i}.id_value = {}(r.\"{}\")",
            t.name,
            normalizer_name(t.normalize),
            s.column
        ));
        picks.push(format!("l{i}.profile_id"));
    }
    format!(
        "SELECT coalesce({}) AS profile_id, {columns} FROM raw.{table} r{joins}",
        picks.join(", ")
    )
}

/// The whole profile query; `now_micros` is the refresh's clock.
pub fn profiles_sql(config: &IdentityConfig, now_micros: i64) -> String {
    let lists: Vec<String> = config
        .types
        .iter()
        .map(|t| {
            format!(
                "array_agg(id_value ORDER BY id_value) FILTER (WHERE id_type = '{}') AS \"{}\"",
                t.name,
                list_column(&t.name)
            )
        })
        .collect();
    let list_names: Vec<String> = config
        .types
        .iter()
        .map(|t| format!("i.\"{}\"", list_column(&t.name)))
        .collect();
    let source_rank = {
        let mut case = String::from("CASE r.source");
        for (i, s) in config.source_priority.iter().enumerate() {
            case.push_str(&format!(" WHEN '{}' THEN {i}", s.replace('\'', "''")));
        }
        case.push_str(&format!(" ELSE {} END", config.source_priority.len()));
        case
    };
    let trait_ = |col: &str| {
        format!(
            "array_element(array_agg(\"{col}\" ORDER BY src_rank, updated_at DESC) FILTER (WHERE \"{col}\" IS NOT NULL), 1) AS \"{col}\""
        )
    };
    let traits: Vec<String> = [
        "first_name",
        "last_name",
        "street",
        "city",
        "postal_code",
        "country",
        "birth_date",
        "loyalty_tier",
        "newsletter",
    ]
    .iter()
    .map(|c| trait_(c))
    .collect();
    let customers = attributed(
        config,
        "customers",
        &format!(
            "{source_rank} AS src_rank, r.updated_at, r.first_name, r.last_name, r.street, r.city, r.postal_code, r.country, r.birth_date, r.loyalty_tier, r.newsletter"
        ),
    );
    let events = attributed(config, "events", "r.type, r.timestamp");
    let orders = attributed(
        config,
        "orders",
        "r.amount, r.status, r.channel, r.ordered_at",
    );
    let surveys = attributed(
        config,
        "survey_responses",
        "r.survey, r.score, r.responded_at",
    );
    let consents = attributed(config, "consents", "r.purpose, r.status, r.recorded_at");
    let last_score = |kind: &str| {
        format!(
            "array_element(array_agg(score ORDER BY responded_at DESC) FILTER (WHERE survey = '{kind}'), 1) AS last_{kind}, \
             max(responded_at) FILTER (WHERE survey = '{kind}') AS last_{kind}_at"
        )
    };
    let consent = |purpose: &str| {
        format!(
            "array_element(array_agg(status ORDER BY recorded_at DESC) FILTER (WHERE purpose = '{purpose}'), 1) AS consent_{purpose}"
        )
    };
    let idle_micros = i64::from(config.anonymous_idle_days) * 86_400_000_000;
    format!(
        "WITH ids AS (
            SELECT profile_id, min(first_seen) AS first_seen, max(last_seen) AS last_seen,
                   count(*) FILTER (WHERE id_type <> 'anonymous_id') AS known_ids,
                   {lists}
            FROM {NEW_LINKS} GROUP BY profile_id),
         crm AS (SELECT profile_id, {traits} FROM ({customers}) WHERE profile_id IS NOT NULL GROUP BY profile_id),
         ev AS (SELECT profile_id, count(*) AS events,
                       count(*) FILTER (WHERE type IN ('page', 'screen')) AS page_views,
                       count(*) FILTER (WHERE type = 'track') AS tracks,
                       count(*) FILTER (WHERE type = 'identify') AS identifies
                FROM ({events}) WHERE profile_id IS NOT NULL GROUP BY profile_id),
         ord AS (SELECT profile_id, count(*) AS orders,
                        count(*) FILTER (WHERE status NOT IN ('returned', 'cancelled')) AS net_orders,
                        sum(amount) AS gross_revenue,
                        sum(amount) FILTER (WHERE status NOT IN ('returned', 'cancelled')) AS net_revenue,
                        max(ordered_at) AS last_order_at
                 FROM ({orders}) WHERE profile_id IS NOT NULL GROUP BY profile_id),
         chan AS (SELECT profile_id, array_element(array_agg(channel ORDER BY n DESC, channel), 1) AS preferred_channel
                  FROM (SELECT profile_id, channel, count(*) AS n FROM ({orders}) WHERE profile_id IS NOT NULL GROUP BY profile_id, channel)
                  GROUP BY profile_id),
         srv AS (SELECT profile_id, {nps}, {csat}, {ces}
                 FROM ({surveys}) WHERE profile_id IS NOT NULL GROUP BY profile_id),
         cns AS (SELECT profile_id, {c1}, {c2}, {c3}, {c4}
                 FROM ({consents}) WHERE profile_id IS NOT NULL GROUP BY profile_id)
        SELECT i.profile_id, {list_names},
               crm.first_name, crm.last_name, crm.street, crm.city, crm.postal_code, crm.country,
               crm.birth_date, crm.loyalty_tier, crm.newsletter,
               i.first_seen, i.last_seen,
               coalesce(ev.events, 0) AS events, coalesce(ev.page_views, 0) AS page_views,
               coalesce(ev.tracks, 0) AS tracks, coalesce(ev.identifies, 0) AS identifies,
               coalesce(ord.orders, 0) AS orders, coalesce(ord.net_orders, 0) AS net_orders,
               ord.gross_revenue, ord.net_revenue,
               CASE WHEN ord.net_orders > 0 THEN ord.net_revenue / ord.net_orders END AS avg_order_value,
               ord.last_order_at, chan.preferred_channel,
               srv.last_nps, srv.last_nps_at, srv.last_csat, srv.last_csat_at, srv.last_ces, srv.last_ces_at,
               cns.consent_email_marketing, cns.consent_sms_marketing, cns.consent_ads, cns.consent_analytics,
               to_timestamp_micros({now_micros}) AS refreshed_at
        FROM ids i
        LEFT JOIN crm ON crm.profile_id = i.profile_id
        LEFT JOIN ev ON ev.profile_id = i.profile_id
        LEFT JOIN ord ON ord.profile_id = i.profile_id
        LEFT JOIN chan ON chan.profile_id = i.profile_id
        LEFT JOIN srv ON srv.profile_id = i.profile_id
        LEFT JOIN cns ON cns.profile_id = i.profile_id
        WHERE i.known_ids > 0 OR i.last_seen >= to_timestamp_micros({cutoff})
        ORDER BY i.profile_id",
        lists = lists.join(",\n                   "),
        traits = traits.join(", "),
        list_names = list_names.join(", "),
        nps = last_score("nps"),
        csat = last_score("csat"),
        ces = last_score("ces"),
        c1 = consent("email_marketing"),
        c2 = consent("sms_marketing"),
        c3 = consent("ads"),
        c4 = consent("analytics"),
        cutoff = now_micros - idle_micros,
    )
}
