//! Refreshes that never finished. A refresh leaves a small marker in the
//! lake while it runs (`system/refreshes_running/<id>.json`: when, which
//! process on which host) and removes it once its row is in
//! `system.refreshes`. A process killed mid-refresh (`kill -9`, a lost
//! machine) leaves its marker; the next refresh, or `serve` at start, turns
//! every marker whose process is gone into a row with status
//! `interrupted`, so the history shows every attempt.

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::lake::Lake;

fn dir() -> Path {
    Path::from("system/refreshes_running")
}

/// What a running refresh leaves in the lake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Marker {
    pub id: String,
    pub started: DateTime<Utc>,
    pub host: String,
    pub pid: u32,
    pub full: bool,
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Whether the process that wrote `marker` is certainly gone: on this
/// host, no such process; on another host, a day has passed.
fn abandoned(marker: &Marker, now: DateTime<Utc>) -> bool {
    if marker.host == host() {
        marker.pid == std::process::id()
            || !std::path::Path::new(&format!("/proc/{}", marker.pid)).exists()
    } else {
        now - marker.started > chrono::Duration::hours(24)
    }
}

impl Marker {
    pub(super) async fn start(lake: &Lake, started: DateTime<Utc>, full: bool) -> Result<Marker> {
        let marker = Marker {
            id: uuid::Uuid::new_v4().to_string(),
            started,
            host: host(),
            pid: std::process::id(),
            full,
        };
        lake.put_json(&marker.path(), &marker).await?;
        Ok(marker)
    }

    fn path(&self) -> Path {
        dir().join(format!("{}.json", self.id))
    }

    pub(super) async fn finish(self, lake: &Lake) -> Result<()> {
        let path = lake.path(&self.path());
        match lake.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(crate::error::Error::store(format!("deleting {path}"), e)),
        }
    }
}

/// The markers of refreshes whose process is gone. Called with this
/// process's refresh lock held, so none of this process's own is running.
pub(super) async fn abandoned_markers(lake: &Lake, now: DateTime<Utc>) -> Result<Vec<Marker>> {
    let mut found = Vec::new();
    for (_, meta) in lake.files_named(&dir(), ".json").await? {
        let relative = lake.relative(&meta.location);
        match lake.get_json::<Marker>(&relative).await {
            Ok(Some(marker)) if abandoned(&marker, now) => found.push(marker),
            Ok(_) => {}
            Err(e) => tracing::warn!("an unreadable refresh marker was left as it is: {e}"),
        }
    }
    Ok(found)
}
