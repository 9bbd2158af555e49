//! Sealed log segments → Parquet in the lake.
//!
//! A segment's accepted messages become `raw.events` files (one per day
//! touched, through the one write path [`crate::ingest::land_once`]) and its
//! refused messages become `rejects/events/` rows with their reason; the
//! flush is recorded in `system.ingests`. Every file name derives from the
//! log's id and the segment number, so flushing a segment again after a
//! crash (between writing the files and removing the segment) rewrites the
//! same files: each acknowledged message is in the lake exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::message::Event;
use super::wal::{Sealed, Wal, read_segment};
use crate::error::{Error, Result};
use crate::ingest::files::{FileReport, Reject, record, write_rejects};
use crate::ingest::land_once;
use crate::lake::Lake;
use crate::schema::{RawTable, utc_timestamps};

/// A refused message, kept with its reason until it reaches `rejects/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    /// The endpoint and source, e.g. `POST /v1/batch (web)`.
    pub source: String,
    /// Position of the message in its batch (0 for single messages).
    pub index: u64,
    pub field: Option<String>,
    pub reason: String,
    /// The message as sent (JSON), cut at 32 KB.
    pub raw: String,
}

/// What one request adds to the log.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub events: Vec<Event>,
    pub refused: Vec<Refused>,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain structs of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What flushing did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub segments: u64,
    pub events: u64,
    pub refused: u64,
    pub files: u64,
}

/// The message ids in a segment (to rebuild the dedup window at start-up).
pub fn message_ids(sealed: &Sealed) -> Result<Vec<String>> {
    let (records, _) = read_segment(sealed)?;
    Ok(records
        .iter()
        .filter_map(|r| serde_json::from_slice::<Record>(r).ok())
        .flat_map(|r| r.events.into_iter().map(|e| e.message_id))
        .collect())
}

/// Write one sealed segment into the lake; the caller removes it after.
/// Events carrying a suppressed identifier (`identity` says which fields
/// are identifiers) are dropped here, before the lake, and counted.
pub async fn flush_segment(
    lake: &Lake,
    wal: &Wal,
    sealed: &Sealed,
    identity: &crate::identity::IdentityConfig,
) -> Result<Flushed> {
    let started = Utc::now();
    let read = sealed.clone();
    let (records, problem) = tokio::task::spawn_blocking(move || read_segment(&read))
        .await
        .map_err(|e| Error::Collector(format!("reading a log segment: {e}")))??;
    let name = sealed
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(problem) = problem {
        tracing::warn!(segment = %name, "{problem}");
    }
    let mut events = Vec::new();
    let mut refused = Vec::new();
    for (i, bytes) in records.iter().enumerate() {
        match serde_json::from_slice::<Record>(bytes) {
            Ok(record) => {
                events.extend(record.events);
                refused.extend(record.refused);
            }
            // The checksum matched, so this is a format change, not damage:
            // stop rather than drop acknowledged messages.
            Err(e) => {
                return Err(Error::Collector(format!(
                    "{}: record {i} cannot be decoded ({e}); the segment is kept",
                    sealed.path.display()
                )));
            }
        }
    }
    let load_id = Uuid::new_v5(&wal.id(), &sealed.seq.to_le_bytes());
    let once = format!("collector-{}", wal.id());
    let mut batch = events_batch(&events)?;
    let suppressions = crate::identity::suppression::Suppressions::load(lake).await?;
    let mut suppressed = 0;
    if let Some(hits) = suppressions.rows_of(RawTable::Events.name(), &batch, identity)? {
        suppressed = hits.true_count() as u64;
        let keep = datafusion::arrow::compute::not(&hits)
            .map_err(|e| Error::arrow("dropping suppressed events", e))?;
        batch = datafusion::arrow::compute::filter_record_batch(&batch, &keep)
            .map_err(|e| Error::arrow("dropping suppressed events", e))?;
    }
    let landed = land_once(
        lake,
        RawTable::Events,
        &[batch],
        Some((&once, i64::try_from(sealed.seq).unwrap_or(i64::MAX))),
    )
    .await?;
    let mut by_source: BTreeMap<&str, Vec<Reject>> = BTreeMap::new();
    for r in &refused {
        by_source
            .entry(r.source.as_str())
            .or_default()
            .push(Reject {
                line: r.index,
                field: r.field.clone().unwrap_or_default(),
                reason: r.reason.clone(),
                raw: r.raw.clone(),
            });
    }
    for (chunk, (source, rejects)) in by_source.iter().enumerate() {
        write_rejects(
            lake,
            RawTable::Events,
            source,
            &load_id,
            chunk as u64,
            rejects,
        )
        .await?;
    }
    let report = FileReport {
        source: format!("collector {}/{name}", wal.dir().display()),
        rows_read: (events.len() + refused.len()) as u64,
        rows_landed: landed.rows as u64,
        rows_rejected: refused.len() as u64,
        files_written: landed.files as u64,
        rows_suppressed: suppressed,
        ..FileReport::default()
    };
    record(
        lake,
        RawTable::Events,
        &report,
        &format!("collector-{load_id}"),
        &load_id,
        started,
    )
    .await?;
    Ok(Flushed {
        segments: 1,
        events: landed.rows as u64,
        refused: refused.len() as u64,
        files: landed.files as u64,
    })
}

/// Accepted messages as a batch of `raw.events`' file schema.
fn events_batch(events: &[Event]) -> Result<RecordBatch> {
    let text = |f: fn(&Event) -> Option<&str>| -> ArrayRef {
        Arc::new(StringArray::from_iter(events.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            events.iter().map(|e| e.message_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            events.iter().map(|e| e.kind.as_str()),
        )),
        text(|e| e.event.as_deref()),
        text(|e| e.name.as_deref()),
        text(|e| e.anonymous_id.as_deref()),
        text(|e| e.user_id.as_deref()),
        text(|e| e.previous_id.as_deref()),
        text(|e| e.group_id.as_deref()),
        text(|e| e.email.as_deref()),
        utc_timestamps(events.iter().map(|e| e.timestamp)),
        utc_timestamps(events.iter().map(|e| e.received_at)),
        text(|e| e.properties.as_deref()),
        text(|e| e.traits.as_deref()),
        text(|e| e.context.as_deref()),
        text(|e| e.extra.as_deref()),
    ];
    RecordBatch::try_new(RawTable::Events.file_schema(), columns)
        .map_err(|e| Error::arrow("building raw.events rows from the log", e))
}
