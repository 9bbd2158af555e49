//! The profile API for real time: `GET /api/v1/profiles/{id_type}/{value}`
//! answers the unified profile of whoever holds that identifier as JSON —
//! its traits (masked for the token's role exactly as over SQL), its
//! identifiers, and the events the collector in this process accepted for
//! them since the profile was last refreshed, so that a visitor's latest
//! action counts before the next refresh. A bearer token per application
//! (`[[console.tokens]]`); a console session may call it too. Unknown
//! identifier: 404; bad token: 401; both with a JSON error.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use serde_json::json;

use super::{Console, data};
use crate::identity::suppression::{normalised, text};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route("/api/v1/profiles/{id_type}/{value}", get(profile))
}

/// `body` as an `application/json` answer.
fn json_answer(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json_answer(status, &json!({ "error": message }))
}

async fn profile(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path((id_type, value)): Path<(String, String)>,
) -> Response {
    let Some(role) = console.auth.api_role(&headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "a valid token is required: Authorization: Bearer <token>",
        );
    };
    if console.identity.id_type(&id_type).is_none() {
        return error(StatusCode::NOT_FOUND, "unknown identifier type");
    }
    match answer(&console, role, &id_type, &value).await {
        Ok(Some(body)) => json_answer(StatusCode::OK, &body),
        Ok(None) => error(StatusCode::NOT_FOUND, "no profile has this identifier"),
        Err(e) => {
            let message = crate::redact::values(&e.to_string());
            tracing::warn!("profile API: {message}");
            error(StatusCode::INTERNAL_SERVER_ERROR, &message)
        }
    }
}

async fn answer(
    console: &Console,
    role: crate::pgwire::auth::Role,
    id_type: &str,
    value: &str,
) -> crate::error::Result<Option<serde_json::Value>> {
    let Some(loaded) = console.cache.current(&console.lake, &console.admin).await? else {
        return Ok(None);
    };
    let wanted = normalised(&console.identity, id_type, value);
    let Some(row) = loaded.find(id_type, &wanted) else {
        return Ok(None);
    };
    let profile = loaded.profile(row);
    let identifiers = loaded.identifiers(row)?;
    let refreshed = profile
        .column_by_name("refreshed_at")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .filter(|c| !c.is_empty() && c.is_valid(0))
        .map_or(i64::MIN, |c| c.value(0));
    let values: Vec<String> = text(identifiers.column(1))?
        .iter()
        .flatten()
        .map(str::to_string)
        .collect();
    let recent = console
        .recent
        .as_ref()
        .map(|r| r.of(&values, refreshed))
        .unwrap_or_default();
    let profile_id = match profile.column_by_name("profile_id") {
        Some(ids) => text(ids)?.value(0).to_string(),
        None => return Ok(None),
    };
    let [profile, identifiers] = data::mask_for(console, role, vec![profile, identifiers])?
        .try_into()
        .map_err(|_| crate::error::Error::Config("masking changed the batches".into()))?;
    let profile = crate::privacy::json_rows(&[profile])?.into_iter().next();
    Ok(Some(json!({
        "profile_id": profile_id,
        "profile": profile,
        "identifiers": crate::privacy::json_rows(&[identifiers])?,
        "events_since_refresh": recent,
        "version": loaded.version,
    })))
}
