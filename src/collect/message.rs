//! One Segment Tracking API message → one `raw.events` row, or the precise
//! reason it cannot be one.
//!
//! This owns the spec's rules: the six message types, `userId` or
//! `anonymousId` required (both for `alias`: `userId` and `previousId`),
//! `event` required for `track`, `messageId` under 100 characters (one is
//! made up when absent, as Segment does), 32 KB per message, and the
//! clock-skew correction `timestamp = receivedAt − (sentAt −
//! originalTimestamp)`. Ids sent as numbers are kept as their text, as
//! Segment does. `properties`, `traits` and `context` are stored as JSON
//! text; `integrations` is kept inside `context` under that key, and every
//! other top-level key in `extra`, so nothing a client sent is lost.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest message the spec accepts, in bytes of JSON.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Longest `messageId` accepted, in characters.
pub const MAX_MESSAGE_ID_CHARS: usize = 100;

/// The Segment message types.
pub const TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

/// An accepted message, normalised to the columns of `raw.events`.
/// Times are microseconds since the epoch, UTC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub event: Option<String>,
    pub name: Option<String>,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    pub previous_id: Option<String>,
    pub group_id: Option<String>,
    pub email: Option<String>,
    pub timestamp: i64,
    pub received_at: i64,
    pub properties: Option<String>,
    pub traits: Option<String>,
    pub context: Option<String>,
    /// The message's other top-level keys (`version`, `channel`, a
    /// library's own), as a JSON object: nothing a client sent is dropped.
    /// Absent from log segments written before it existed.
    #[serde(default)]
    pub extra: Option<String>,
}

/// The top-level keys the spec gives a meaning (and a column or a rule):
/// every other key of a message is kept in `extra`.
const SPEC_KEYS: [&str; 15] = [
    "type",
    "anonymousId",
    "userId",
    "previousId",
    "groupId",
    "event",
    "name",
    "messageId",
    "originalTimestamp",
    "timestamp",
    "sentAt",
    "properties",
    "traits",
    "context",
    "integrations",
];

/// Why a message was refused: the field at fault (if one) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: Option<&'static str>,
    pub reason: String,
}

impl Refusal {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Refusal {
            field: Some(field),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.field {
            Some(field) => write!(f, "{field}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// What a batch (or the request around a single message) says for all of
/// its messages.
#[derive(Debug, Default, Clone)]
pub struct Envelope<'a> {
    /// The request's `sentAt`, for messages without their own.
    pub sent_at: Option<&'a Value>,
    /// The batch's `context`, for messages without their own.
    pub context: Option<&'a Value>,
    /// The batch's `integrations`, for messages without their own.
    pub integrations: Option<&'a Value>,
}

/// Turn one message into an [`Event`]. `kind` is the type the endpoint
/// implies (`/v1/track` → `track`); in a batch each message names its own.
/// `size` is the message's size in bytes when the caller knows it (a
/// single message is its body); otherwise the size is that of what would
/// be stored, which saves serialising every message of a batch again.
pub fn parse(
    message: &Value,
    kind: Option<&str>,
    envelope: &Envelope<'_>,
    received_at: DateTime<Utc>,
    size: Option<usize>,
) -> Result<Event, Refusal> {
    let event = build(message, kind, envelope, received_at)?;
    let size = size.unwrap_or_else(|| event.stored_len());
    if size > MAX_MESSAGE_BYTES {
        return Err(Refusal::new(
            "message",
            format!("is {size} bytes; the limit is {MAX_MESSAGE_BYTES} (32 KB)"),
        ));
    }
    Ok(event)
}

impl Event {
    /// Bytes of text this event stores (its JSON fields and ids).
    pub fn stored_len(&self) -> usize {
        let text = |v: &Option<String>| v.as_ref().map_or(0, String::len);
        self.message_id.len()
            + self.kind.len()
            + [
                &self.event,
                &self.name,
                &self.anonymous_id,
                &self.user_id,
                &self.previous_id,
                &self.group_id,
                &self.email,
                &self.properties,
                &self.traits,
                &self.context,
                &self.extra,
            ]
            .into_iter()
            .map(text)
            .sum::<usize>()
    }
}

fn build(
    message: &Value,
    kind: Option<&str>,
    envelope: &Envelope<'_>,
    received_at: DateTime<Utc>,
) -> Result<Event, Refusal> {
    let object = message
        .as_object()
        .ok_or_else(|| Refusal::new("message", "is not a JSON object"))?;
    let kind = match (kind, object.get("type")) {
        (Some(kind), _) => kind.to_string(),
        (None, Some(Value::String(t))) if TYPES.contains(&t.as_str()) => t.clone(),
        (None, Some(Value::String(t))) => {
            return Err(Refusal::new(
                "type",
                format!("unknown type '{t}' (expected one of {})", TYPES.join(", ")),
            ));
        }
        (None, Some(_)) => return Err(Refusal::new("type", "must be a string")),
        (None, None) => return Err(Refusal::new("type", "is missing")),
    };
    let anonymous_id = id(object, "anonymousId")?;
    let user_id = id(object, "userId")?;
    let previous_id = id(object, "previousId")?;
    if kind == "alias" {
        if user_id.is_none() {
            return Err(Refusal::new("userId", "is required for alias"));
        }
        if previous_id.is_none() {
            return Err(Refusal::new("previousId", "is required for alias"));
        }
    } else if user_id.is_none() && anonymous_id.is_none() {
        return Err(Refusal::new(
            "userId",
            "userId or anonymousId is required (both are missing or empty)",
        ));
    }
    let event = text(object, "event")?;
    if kind == "track" && event.is_none() {
        return Err(Refusal::new("event", "is required for track"));
    }
    let message_id = match id(object, "messageId")? {
        Some(id) if id.chars().count() >= MAX_MESSAGE_ID_CHARS => {
            return Err(Refusal::new(
                "messageId",
                format!(
                    "is {} characters; it must be under {MAX_MESSAGE_ID_CHARS}",
                    id.chars().count()
                ),
            ));
        }
        Some(id) => id,
        None => format!("panorama-{}", uuid::Uuid::new_v4()),
    };
    let received = received_at.timestamp_micros();
    let original = match object.get("originalTimestamp") {
        Some(v) if !v.is_null() => Some(time(v, "originalTimestamp")?),
        _ => match object.get("timestamp") {
            Some(v) if !v.is_null() => Some(time(v, "timestamp")?),
            _ => None,
        },
    };
    let sent_at = match object.get("sentAt").or(envelope.sent_at) {
        Some(v) if !v.is_null() => Some(time(v, "sentAt")?),
        _ => None,
    };
    // The client's clock may be off; the time it took to reach us is not.
    let timestamp = match (original, sent_at) {
        (Some(original), Some(sent)) => received - (sent - original),
        (Some(original), None) => original,
        (None, _) => received,
    };
    let traits = json_object(object, "traits")?;
    let context = context(object, envelope)?;
    let email = email(object.get("traits"))
        .or_else(|| email(object.get("context").and_then(|c| c.get("traits"))));
    Ok(Event {
        message_id,
        kind,
        event,
        name: text(object, "name")?,
        anonymous_id,
        user_id,
        previous_id,
        group_id: id(object, "groupId")?,
        email,
        timestamp,
        received_at: received,
        properties: json_object(object, "properties")?,
        traits,
        context,
        extra: extra(object),
    })
}

/// The keys of `object` the spec does not name, as a JSON object.
fn extra(object: &Map<String, Value>) -> Option<String> {
    let rest: Map<String, Value> = object
        .iter()
        .filter(|(k, v)| !SPEC_KEYS.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!rest.is_empty()).then(|| Value::Object(rest).to_string())
}

/// An identifier: a string or a number (kept as its text); empty is absent.
fn id(object: &Map<String, Value>, field: &'static str) -> Result<Option<String>, Refusal> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            Ok((!s.is_empty()).then(|| s.to_string()))
        }
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(Refusal::new(field, "must be a string or a number")),
    }
}

fn text(object: &Map<String, Value>, field: &'static str) -> Result<Option<String>, Refusal> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok((!s.is_empty()).then(|| s.clone())),
        Some(_) => Err(Refusal::new(field, "must be a string")),
    }
}

fn json_object(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, Refusal> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.to_string())),
        Some(_) => Err(Refusal::new(field, "must be a JSON object")),
    }
}

/// The message's context (or the batch's), with `integrations` folded in.
fn context(
    object: &Map<String, Value>,
    envelope: &Envelope<'_>,
) -> Result<Option<String>, Refusal> {
    let context = match object.get("context") {
        None | Some(Value::Null) => envelope.context,
        Some(c) => Some(c),
    };
    let integrations = match object.get("integrations") {
        None | Some(Value::Null) => envelope.integrations,
        Some(i) => Some(i),
    };
    match (context, integrations) {
        (None | Some(Value::Null), None) => Ok(None),
        (Some(c @ Value::Object(_)), None) => Ok(Some(c.to_string())),
        (Some(Value::Object(c)), Some(i)) => {
            let mut c = c.clone();
            c.insert("integrations".into(), i.clone());
            Ok(Some(Value::Object(c).to_string()))
        }
        (None | Some(Value::Null), Some(i)) => {
            let mut c = Map::new();
            c.insert("integrations".into(), i.clone());
            Ok(Some(Value::Object(c).to_string()))
        }
        (Some(_), _) => Err(Refusal::new("context", "must be a JSON object")),
    }
}

fn email(traits: Option<&Value>) -> Option<String> {
    let email = traits?.get("email")?.as_str()?.trim();
    (!email.is_empty()).then(|| email.to_string())
}

/// An ISO 8601 time with an offset (what every SDK sends); microseconds.
fn time(value: &Value, field: &'static str) -> Result<i64, Refusal> {
    let text = value
        .as_str()
        .ok_or_else(|| Refusal::new(field, "must be an ISO 8601 string"))?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        // chrono's reason names the problem, not the text.
        .map_err(|e| Refusal::new(field, format!("not an ISO 8601 time with a zone ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn parse_one(v: Value) -> Result<Event, Refusal> {
        let size = Some(v.to_string().len());
        parse(
            &v,
            None,
            &Envelope::default(),
            at("2026-03-01T12:00:10Z"),
            size,
        )
    }

    #[test]
    fn clock_skew_is_corrected_with_sent_at() {
        // The device clock is 1 hour fast; the message took 10 s to arrive.
        let e = parse_one(json!({
            "type": "track", "event": "Signed Up", "userId": 42,
            "timestamp": "2026-03-01T13:00:00Z", "sentAt": "2026-03-01T13:00:00Z",
            "messageId": "m1"
        }))
        .unwrap();
        assert_eq!(e.user_id.as_deref(), Some("42"));
        assert_eq!(e.timestamp, at("2026-03-01T12:00:10Z").timestamp_micros());
        // originalTimestamp (mobile SDKs) wins over timestamp.
        let e = parse_one(json!({
            "type": "screen", "anonymousId": "a", "name": "Home",
            "originalTimestamp": "2026-03-01T11:59:00Z", "timestamp": "2020-01-01T00:00:00Z",
            "sentAt": "2026-03-01T12:00:00Z"
        }))
        .unwrap();
        assert_eq!(e.timestamp, at("2026-03-01T11:59:10Z").timestamp_micros());
        assert!(e.message_id.starts_with("panorama-"));
    }

    #[test]
    fn refusals_name_the_field() {
        let refuse = |v: Value| parse_one(v).unwrap_err().to_string();
        assert_eq!(
            refuse(json!({"type": "track", "event": "x"})),
            "userId: userId or anonymousId is required (both are missing or empty)"
        );
        assert_eq!(
            refuse(json!({"type": "track", "userId": "u"})),
            "event: is required for track"
        );
        assert_eq!(
            refuse(json!({"type": "alias", "userId": "u"})),
            "previousId: is required for alias"
        );
        assert!(
            refuse(json!({"type": "click", "userId": "u"}))
                .starts_with("type: unknown type 'click'")
        );
        assert!(
            refuse(json!({"type": "page", "userId": "u", "messageId": "x".repeat(100)}))
                .starts_with("messageId: is 100 characters")
        );
        assert!(
            refuse(json!({"type": "page", "userId": "u", "timestamp": "yesterday"}))
                .starts_with("timestamp: not an ISO 8601 time")
        );
        assert!(
            refuse(json!({"type": "page", "userId": "u", "properties": {"x": "y".repeat(33_000)}}))
                .starts_with("message: is 330")
        );
    }

    #[test]
    fn integrations_and_batch_context_are_kept() {
        let batch_context = json!({"library": {"name": "analytics-python"}});
        let envelope = Envelope {
            context: Some(&batch_context),
            ..Envelope::default()
        };
        let msg = json!({"type": "identify", "userId": "u", "traits": {"email": " Jane@X.com "},
                         "integrations": {"All": false}});
        let e = parse(&msg, None, &envelope, Utc::now(), None).unwrap();
        let context: Value = serde_json::from_str(e.context.as_deref().unwrap()).unwrap();
        assert_eq!(context["library"]["name"], "analytics-python");
        assert_eq!(context["integrations"]["All"], false);
        assert_eq!(e.email.as_deref(), Some("Jane@X.com"));
    }

    /// Keys the spec does not name are kept in `extra` with their JSON
    /// values; a message with none has no `extra`.
    #[test]
    fn unknown_keys_are_kept_in_extra() {
        let msg = json!({"type": "track", "userId": "u", "event": "Signed Up",
                         "version": 2, "channel": "server", "loyalty": {"points": 120},
                         "writeKey": null});
        let e = parse(&msg, None, &Envelope::default(), Utc::now(), None).unwrap();
        let extra: Value = serde_json::from_str(e.extra.as_deref().unwrap()).unwrap();
        assert_eq!(
            extra,
            json!({"version": 2, "channel": "server", "loyalty": {"points": 120}})
        );
        let plain = json!({"type": "page", "anonymousId": "a", "name": "Home"});
        let e = parse(&plain, None, &Envelope::default(), Utc::now(), None).unwrap();
        assert_eq!(e.extra, None);
    }
}
