//! The HTTP face of the collector: Segment's Tracking API routes, write-key
//! authentication, request limits and the answers SDKs understand.
//!
//! Routes: `POST /v1/{track,identify,page,screen,group,alias}` (one
//! message), `POST /v1/batch` and `/v1/import` (up to 2,500 messages, 500
//! KB), the one-letter paths analytics.js uses (`/v1/t`, `/v1/i`, `/v1/p`,
//! `/v1/s`, `/v1/g`, `/v1/a`, `/v1/b`), CORS preflights for browsers, and
//! `GET /health`. The write key comes as the HTTP Basic user name (server
//! and mobile SDKs) or as `writeKey` in the body (analytics.js). Bodies may
//! be gzip-compressed. Every error is a JSON body saying what is wrong;
//! refused messages of a batch are listed in the answer and stored in
//! `rejects/events/`; `429` and `503` carry `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::Utc;
use serde_json::{Value, json};

use super::flush::{Record, Refused};
use super::message::{self, Envelope, MAX_MESSAGE_BYTES};
use super::{Shared, lock};

/// Largest batch body, as the spec says (500 KB).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Most messages in one batch.
pub const MAX_BATCH_MESSAGES: usize = 2_500;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/{endpoint}", post(ingest).options(preflight))
        .route("/health", get(health))
        .fallback(|| async {
            failure(
                StatusCode::NOT_FOUND,
                "unknown path; the collector serves POST /v1/track, /v1/identify, /v1/page, \
                 /v1/screen, /v1/group, /v1/alias, /v1/batch and /v1/import",
            )
        })
        .with_state(shared)
}

/// What an endpoint takes.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Single(&'static str),
    Batch,
}

impl Endpoint {
    fn parse(path: &str) -> Option<Endpoint> {
        Some(match path {
            "track" | "t" => Endpoint::Single("track"),
            "identify" | "i" => Endpoint::Single("identify"),
            "page" | "p" => Endpoint::Single("page"),
            "screen" | "s" => Endpoint::Single("screen"),
            "group" | "g" => Endpoint::Single("group"),
            "alias" | "a" => Endpoint::Single("alias"),
            "batch" | "b" | "import" => Endpoint::Batch,
            _ => return None,
        })
    }
}

async fn ingest(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(endpoint) = Endpoint::parse(&path) else {
        return failure(
            StatusCode::NOT_FOUND,
            &format!(
                "unknown endpoint /v1/{path}; expected track, identify, page, screen, group, \
                 alias, batch or import"
            ),
        );
    };
    let limit = match endpoint {
        Endpoint::Single(_) => MAX_MESSAGE_BYTES,
        Endpoint::Batch => MAX_BATCH_BYTES,
    };
    let bytes = match read_body(body, &headers, limit).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused.into_response(),
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(e) => {
            return failure(StatusCode::BAD_REQUEST, &format!("malformed JSON: {e}"));
        }
    };
    let source = match authenticate(&shared, &headers, &value) {
        Ok(source) => source,
        Err(refused) => return refused.into_response(),
    };
    let received_at = Utc::now();
    let origin = format!("POST /v1/{path} ({source})");
    let mut record = Record::default();
    let messages: Vec<&Value> = match endpoint {
        Endpoint::Single(kind) => {
            let size = Some(bytes.len());
            accept(
                &mut record,
                &origin,
                0,
                &value,
                message::parse(&value, Some(kind), &Envelope::default(), received_at, size),
            );
            vec![&value]
        }
        Endpoint::Batch => {
            let Some(batch) = value.get("batch").and_then(Value::as_array) else {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "batch: the body must be a JSON object with a \"batch\" array of messages",
                );
            };
            if batch.len() > MAX_BATCH_MESSAGES {
                return failure(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "batch: {} messages; the limit is {MAX_BATCH_MESSAGES} per request",
                        batch.len()
                    ),
                );
            }
            let envelope = Envelope {
                sent_at: value.get("sentAt"),
                context: value.get("context"),
                integrations: value.get("integrations"),
            };
            for (i, m) in batch.iter().enumerate() {
                // A message is never larger than the body it came in; in a
                // larger body, its size is that of what it stores.
                let size = (bytes.len() <= MAX_MESSAGE_BYTES).then_some(bytes.len());
                let parsed = message::parse(m, None, &envelope, received_at, size);
                accept(&mut record, &origin, i as u64, m, parsed);
            }
            batch.iter().collect()
        }
    };
    if let Some(wait) = shared.take_rate(&source, messages.len() as u64) {
        return retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            wait,
            &format!(
                "source '{source}' is over its limit of {} messages per second",
                shared.config.rate_limit_per_second
            ),
        );
    }
    // Drop messages already stored within the dedup window.
    let now = received_at.timestamp_micros();
    let before = record.events.len();
    let mut remembered = Vec::new();
    {
        let mut dedup = lock(&shared.dedup);
        record.events.retain(|e| {
            let new = dedup.insert(&e.message_id, now);
            if new {
                remembered.push(e.message_id.clone());
            }
            new
        });
    }
    let duplicates = before - record.events.len();
    if let Err(refused) = store(&shared, &record, &remembered).await {
        return refused;
    }
    answer(endpoint, &record, duplicates, &messages)
}

/// Write the accepted messages (and refusals) to the log, then count them
/// and wake the flusher when enough wait; the client's retry response
/// when the log is at its disk budget or cannot be written (the messages'
/// ids are forgotten, so a retry is not taken for a duplicate).
async fn store(
    shared: &Shared,
    record: &Record,
    remembered: &[String],
) -> std::result::Result<(), Response> {
    let forget = |ids: &[String]| lock(&shared.dedup).forget(ids.iter().map(String::as_str));
    if record.events.is_empty() && record.refused.is_empty() {
        return Ok(());
    }
    let payload = record.encode();
    let budget = shared.config.disk_budget_mb << 20;
    if shared.wal.bytes() + payload.len() as u64 > budget {
        forget(remembered);
        let cause = lock(&shared.lake_error)
            .clone()
            .unwrap_or_else(|| "the flusher is behind".into());
        return Err(retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(shared.config.flush_interval_ms),
            &format!(
                "the collector's log is at its disk budget ({} MB) until it reaches the \
                 lake ({cause})",
                shared.config.disk_budget_mb
            ),
        ));
    }
    if let Err(e) = shared.wal.append(payload).await {
        forget(remembered);
        tracing::error!("{e}");
        return Err(retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(1),
            &e.to_string(),
        ));
    }
    for event in &record.events {
        shared.recent.push(event);
    }
    shared
        .accepted
        .fetch_add(record.events.len() as u64, Ordering::Relaxed);
    let waiting = shared
        .waiting
        .fetch_add(record.events.len() as u64, Ordering::Relaxed)
        + record.events.len() as u64;
    if waiting >= shared.config.flush_events {
        shared.flush_soon.notify_one();
    }
    Ok(())
}

/// Keep a parsed message, or keep its refusal for `rejects/`.
fn accept(
    record: &mut Record,
    origin: &str,
    index: u64,
    raw: &Value,
    parsed: Result<message::Event, message::Refusal>,
) {
    match parsed {
        Ok(event) => record.events.push(event),
        Err(refusal) => {
            let mut raw = raw.to_string();
            if raw.len() > MAX_MESSAGE_BYTES {
                let mut cut = MAX_MESSAGE_BYTES;
                while !raw.is_char_boundary(cut) {
                    cut -= 1;
                }
                raw.truncate(cut);
            }
            record.refused.push(Refused {
                source: origin.to_string(),
                index,
                field: refusal.field.map(str::to_string),
                reason: refusal.reason,
                raw,
            })
        }
    }
}

fn answer(endpoint: Endpoint, record: &Record, duplicates: usize, messages: &[&Value]) -> Response {
    let refused: Vec<Value> = record
        .refused
        .iter()
        .map(|r| {
            json!({
                "index": r.index,
                "messageId": messages.get(r.index as usize).and_then(|m| m.get("messageId")),
                "field": r.field,
                "reason": r.reason,
            })
        })
        .collect();
    match endpoint {
        Endpoint::Single(_) => match record.refused.first() {
            Some(r) => json_response(
                StatusCode::BAD_REQUEST,
                json!({
                    "success": false,
                    "error": match &r.field {
                        Some(field) => format!("{field}: {}", r.reason),
                        None => r.reason.clone(),
                    },
                    "field": r.field,
                    "stored_in": "rejects/events (system.rejects)",
                }),
            ),
            None => json_response(
                StatusCode::OK,
                json!({"success": true, "duplicates": duplicates}),
            ),
        },
        Endpoint::Batch => {
            let accepted = record.events.len();
            let status = if accepted + duplicates == 0 && !refused.is_empty() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            json_response(
                status,
                json!({
                    "success": status == StatusCode::OK,
                    "accepted": accepted,
                    "duplicates": duplicates,
                    "rejected": refused,
                }),
            )
        }
    }
}

/// The source a request's write key belongs to.
/// A refused request: its status and what to tell the client.
struct Refused4xx(StatusCode, String);

impl IntoResponse for Refused4xx {
    fn into_response(self) -> Response {
        failure(self.0, &self.1)
    }
}

fn authenticate(shared: &Shared, headers: &HeaderMap, body: &Value) -> Result<String, Refused4xx> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .map(|user_pass| match user_pass.split_once(':') {
            Some((user, _)) => user.to_string(),
            None => user_pass,
        })
        .or_else(|| {
            body.get("writeKey")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    let keys = &shared.config.write_keys;
    if keys.is_empty() {
        return Ok("any".to_string());
    }
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Err(Refused4xx(
            StatusCode::UNAUTHORIZED,
            "missing write key: send it as the HTTP Basic user name (or as writeKey in the body)"
                .into(),
        ));
    };
    keys.iter()
        .find(|(_, k)| constant_time_eq(k.as_bytes(), key.as_bytes()))
        .map(|(name, _)| name.clone())
        .ok_or_else(|| Refused4xx(StatusCode::UNAUTHORIZED, "unknown write key".into()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Largest declared body read to the end to answer 413 cleanly.
const DRAIN_BYTES: usize = 16 << 20;

/// Read `body` to its end, dropping it.
async fn drain(body: Body) {
    use futures::StreamExt;
    let mut data = body.into_data_stream();
    while let Some(Ok(_)) = data.next().await {}
}

/// The body, decompressed, refused with 413 when over `limit`.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Vec<u8>, Refused4xx> {
    let too_big = |size: String| {
        Refused4xx(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is {size}; the limit here is {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(len) = declared.filter(|&len| len > limit) {
        // Read it to the end (not kept) when it is not absurdly large: a
        // client still sending when the connection closes sees a broken
        // pipe, not this answer.
        if len <= DRAIN_BYTES {
            drain(body).await;
        }
        return Err(too_big(format!("{len} bytes")));
    }
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_big(format!("over {limit} bytes")))?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(raw.to_vec()),
        "gzip" | "x-gzip" => {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Refused4xx(StatusCode::BAD_REQUEST, format!("gzip body: {e}")))?;
            if out.len() > limit {
                return Err(too_big(format!("over {limit} bytes once decompressed")));
            }
            Ok(out)
        }
        other => Err(Refused4xx(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding '{other}' is not supported (use gzip or none)"),
        )),
    }
}

async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    allow_any_origin(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization, Content-Encoding"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let lake_error = lock(&shared.lake_error).clone();
    json_response(
        StatusCode::OK,
        json!({
            "status": if lake_error.is_none() { "ok" } else { "lake unreachable" },
            "log_bytes": shared.wal.bytes(),
            "lake_error": lake_error,
        }),
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    allow_any_origin(h);
    response
}

/// Browsers may send from any page (analytics.js runs on the customer's site).
fn allow_any_origin(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

fn failure(status: StatusCode, error: &str) -> Response {
    json_response(status, json!({"success": false, "error": error}))
}

fn retry_later(status: StatusCode, wait: Duration, error: &str) -> Response {
    let mut response = failure(status, error);
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}
