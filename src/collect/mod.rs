//! The streaming collector: a Segment-compatible HTTP Tracking API that
//! `serve` runs beside the Postgres front end.
//!
//! It owns the life of a message from the request to the lake: the HTTP
//! endpoints and their limits ([`http`]), the spec's message rules
//! ([`message`]), the write-ahead log that makes a `200` durable ([`wal`]),
//! and the flusher that turns the log into `raw.events` Parquet every few
//! seconds or events ([`flush`]). This file holds the settings (the
//! `[collector]` section of `panorama.toml`), the dedup window of
//! `messageId`s, the per-source rate limit, and the start and stop of the
//! whole.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::lake::Lake;

pub mod flush;
pub mod http;
pub mod message;
pub mod recent;
pub mod wal;

pub use flush::Flushed;

/// The `[collector]` section of `panorama.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Run the collector with `serve`.
    pub enabled: bool,
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Source name → write key. Empty: any key is accepted, which is only
    /// allowed on a loopback address.
    pub write_keys: BTreeMap<String, String>,
    /// Local folder of the write-ahead log (one per server process).
    pub wal_dir: PathBuf,
    /// Flush the log to the lake at least this often...
    pub flush_interval_ms: u64,
    /// ...or as soon as this many messages are waiting.
    pub flush_events: u64,
    /// Disk the log may use while the lake is unreachable; beyond it, 503.
    pub disk_budget_mb: u64,
    /// A `messageId` seen again within this window is stored once.
    pub dedup_window_hours: u64,
    /// At most this many ids are remembered (oldest forgotten first).
    pub dedup_max_ids: usize,
    /// Messages per second per source; 0 = no limit. Beyond it, 429.
    pub rate_limit_per_second: u64,
    /// The identity rules (`[identity]`, set by `serve`): which fields of
    /// an event are identifiers, to drop events of suppressed people.
    #[serde(skip)]
    pub identity: crate::identity::IdentityConfig,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            write_keys: BTreeMap::new(),
            wal_dir: PathBuf::from("panorama-wal"),
            flush_interval_ms: 5_000,
            flush_events: 50_000,
            disk_budget_mb: 1_024,
            dedup_window_hours: 24,
            dedup_max_ids: 2_000_000,
            rate_limit_per_second: 0,
            identity: crate::identity::IdentityConfig::default(),
        }
    }
}

impl CollectorConfig {
    pub fn validate(&self) -> Result<()> {
        if self.write_keys.is_empty() && !self.listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "the collector would listen on {} without write keys; add [collector] \
                 write_keys = {{ web = \"...\" }} to panorama.toml or listen on 127.0.0.1",
                self.listen
            )));
        }
        if let Some((name, _)) = self.write_keys.iter().find(|(_, k)| k.is_empty()) {
            return Err(Error::Config(format!(
                "[collector] write key of source '{name}' is empty"
            )));
        }
        if self.flush_interval_ms == 0 || self.flush_events == 0 {
            return Err(Error::Config(
                "[collector] flush_interval_ms and flush_events must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// State shared by the request handlers and the flusher.
struct Shared {
    config: CollectorConfig,
    lake: Lake,
    wal: wal::Wal,
    dedup: std::sync::Mutex<Dedup>,
    rate: std::sync::Mutex<HashMap<String, Bucket>>,
    /// Messages appended since the last seal.
    waiting: AtomicU64,
    flush_soon: Notify,
    /// Sealed segments not yet in the lake, oldest first; held while flushing.
    pending: tokio::sync::Mutex<Vec<wal::Sealed>>,
    /// Set when the last flush failed (the lake is unreachable).
    lake_error: std::sync::Mutex<Option<String>>,
    /// What was accepted lately, for the profile API.
    recent: Arc<recent::Recent>,
    /// Events accepted since the start, for the console.
    accepted: AtomicU64,
}

/// A collector's counters (see [`Collector::stats`]).
#[derive(Debug, Clone, Default)]
pub struct CollectorStats {
    pub accepted: u64,
    pub backlog_bytes: u64,
    pub lake_error: Option<String>,
}

/// A running collector.
pub struct Collector {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Collector {
    /// Open the log (replaying what a previous process left), then listen.
    pub async fn start(lake: Lake, config: CollectorConfig) -> Result<Collector> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Io {
                what: format!("the collector cannot listen on {}", config.listen),
                path: PathBuf::new(),
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(config.listen);
        let (wal, left) = wal::Wal::open(&config.wal_dir)?;
        let mut dedup = Dedup::new(&config);
        if let Err(e) = seed_from_lake(&lake, &mut dedup).await {
            tracing::warn!(
                "the messageIds stored before this start could not be read, so a retry of \
                 one of them would be stored again: {e}"
            );
        }
        let now = chrono::Utc::now().timestamp_micros();
        for sealed in &left {
            for id in flush::message_ids(sealed)? {
                dedup.insert(&id, now);
            }
        }
        if !left.is_empty() {
            tracing::info!(
                segments = left.len(),
                "replaying the write-ahead log a previous run left"
            );
        }
        let shared = Arc::new(Shared {
            config,
            lake,
            wal,
            dedup: std::sync::Mutex::new(dedup),
            rate: Default::default(),
            waiting: AtomicU64::new(0),
            flush_soon: Notify::new(),
            pending: tokio::sync::Mutex::new(left),
            lake_error: Default::default(),
            recent: Default::default(),
            accepted: AtomicU64::new(0),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server = {
            let (router, mut stopped) = (http::router(shared.clone()), stopped.clone());
            tokio::spawn(async move {
                let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                });
                if let Err(e) = serve.await {
                    tracing::error!("collector HTTP server stopped: {e}");
                }
            })
        };
        let flusher = tokio::spawn(run_flusher(shared.clone(), stopped));
        Ok(Collector {
            addr,
            shared,
            stop,
            tasks: vec![server, flusher],
        })
    }

    /// The address actually bound (the port is chosen when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The events accepted lately, by identifier (the profile API's).
    pub fn recent(&self) -> Arc<recent::Recent> {
        Arc::clone(&self.shared.recent)
    }

    /// What the console shows of it, read when called: events accepted
    /// since the start, bytes of its write-ahead log not yet in the lake,
    /// and the last error flushing it.
    pub fn stats_handle(&self) -> impl Fn() -> CollectorStats + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || CollectorStats {
            accepted: shared.accepted.load(Ordering::Relaxed),
            backlog_bytes: shared.wal.bytes(),
            lake_error: lock(&shared.lake_error).clone(),
        }
    }

    /// Write everything acknowledged so far into the lake now.
    pub async fn flush(&self) -> Result<Flushed> {
        flush_all(&self.shared).await
    }

    /// Stop taking requests, then flush what the log holds (what cannot be
    /// flushed stays in the log for the next start).
    pub async fn shutdown(self) -> Result<Flushed> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        flush_all(&self.shared).await
    }
}

async fn run_flusher(shared: Arc<Shared>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let interval = Duration::from_millis(shared.config.flush_interval_ms);
    let mut delay = interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.flush_soon.notified() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        match flush_all(&shared).await {
            Ok(_) => delay = interval,
            Err(e) => {
                // Keep accepting into the log; try again, backing off to 1 min.
                delay = (delay * 2).min(Duration::from_secs(60));
                tracing::warn!(
                    retry_in_ms = delay.as_millis() as u64,
                    log_mb = shared.wal.bytes() >> 20,
                    "flushing the collector's log to the lake failed, events stay in the log: {e}"
                );
            }
        }
    }
}

/// Seal the current segment and write every sealed one into the lake.
async fn flush_all(shared: &Shared) -> Result<Flushed> {
    let mut pending = shared.pending.lock().await;
    let waiting = shared.waiting.swap(0, Ordering::Relaxed);
    match shared.wal.rotate().await {
        Ok(Some(sealed)) => pending.push(sealed),
        Ok(None) => {}
        Err(e) => {
            shared.waiting.fetch_add(waiting, Ordering::Relaxed);
            return Err(e);
        }
    }
    let mut total = Flushed::default();
    while let Some(sealed) = pending.first().cloned() {
        let flushed =
            match flush::flush_segment(&shared.lake, &shared.wal, &sealed, &shared.config.identity)
                .await
            {
                Ok(flushed) => flushed,
                Err(e) => {
                    *lock(&shared.lake_error) = Some(e.to_string());
                    return Err(e);
                }
            };
        shared.wal.remove(&sealed)?;
        pending.remove(0);
        total.segments += flushed.segments;
        total.events += flushed.events;
        total.refused += flushed.refused;
        total.files += flushed.files;
    }
    *lock(&shared.lake_error) = None;
    if total.segments > 0 {
        tracing::info!(
            events = total.events,
            refused = total.refused,
            files = total.files,
            "collector flushed its log into raw.events"
        );
    }
    Ok(total)
}

/// A poisoned lock only means another request panicked; the data is fine.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `messageId`s seen within the window, as 128-bit hashes.
struct Dedup {
    window_us: i64,
    max: usize,
    seen: HashMap<u128, i64>,
    order: VecDeque<(i64, u128)>,
}

impl Dedup {
    fn new(config: &CollectorConfig) -> Self {
        Dedup {
            window_us: (config.dedup_window_hours as i64) * 3_600_000_000,
            max: config.dedup_max_ids,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn key(id: &str) -> u128 {
        let half = |salt: u8| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            salt.hash(&mut h);
            id.hash(&mut h);
            h.finish() as u128
        };
        (half(0) << 64) | half(1)
    }

    /// Remember `id`; false when it was seen within the window.
    fn insert(&mut self, id: &str, now: i64) -> bool {
        while let Some(&(at, key)) = self.order.front() {
            if at >= now - self.window_us && self.order.len() < self.max.max(1) {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&key) == Some(&at) {
                self.seen.remove(&key);
            }
        }
        let key = Self::key(id);
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key, now);
        self.order.push_back((now, key));
        true
    }

    /// Forget ids whose messages were not stored after all.
    fn forget<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            self.seen.remove(&Self::key(id));
        }
    }
}

/// Remember the `messageId`s of the `raw.events` files written within the
/// dedup window (newest first, up to the cap), so an SDK retrying after a
/// restart is still recognised.
async fn seed_from_lake(lake: &Lake, dedup: &mut Dedup) -> Result<()> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::parquet::arrow::ProjectionMask;
    use futures::StreamExt;
    let since = chrono::Utc::now().timestamp_micros() - dedup.window_us;
    let dir = crate::lake::paths::raw_table_dir(crate::schema::RawTable::Events);
    let mut files: Vec<_> = crate::lake::delta::files(lake, &dir)
        .await?
        .files
        .into_iter()
        .map(|f| f.meta)
        .filter(|m| m.last_modified.timestamp_micros() >= since)
        .collect();
    files.sort_by_key(|m| std::cmp::Reverse(m.last_modified));
    let mut seen: Vec<(i64, Vec<String>)> = Vec::new();
    let mut total = 0;
    for meta in files {
        if total >= dedup.max {
            break;
        }
        let builder = crate::lake::parquet::open(lake, &meta).await?;
        let Some(column) = builder
            .parquet_schema()
            .columns()
            .iter()
            .position(|c| c.name() == "message_id")
        else {
            continue;
        };
        let mask = ProjectionMask::leaves(builder.parquet_schema(), [column]);
        let mut stream = builder
            .with_projection(mask)
            .build()
            .map_err(|e| Error::parquet(format!("reading {}", meta.location), e))?;
        let mut ids = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch =
                batch.map_err(|e| Error::parquet(format!("reading {}", meta.location), e))?;
            if let Some(column) = batch.column(0).as_string_opt::<i32>() {
                ids.extend(
                    (0..column.len())
                        .filter(|&i| column.is_valid(i))
                        .map(|i| column.value(i).to_string()),
                );
            }
        }
        total += ids.len();
        seen.push((meta.last_modified.timestamp_micros(), ids));
    }
    // Oldest first, as the window expects.
    for (at, ids) in seen.into_iter().rev() {
        for id in ids {
            dedup.insert(&id, at);
        }
    }
    if total > 0 {
        tracing::info!(ids = total, "collector dedup window rebuilt from the lake");
    }
    Ok(())
}

/// Token bucket of one source.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Shared {
    /// Take `n` messages from `source`'s allowance; the wait when refused.
    fn take_rate(&self, source: &str, n: u64) -> Option<Duration> {
        let rate = self.config.rate_limit_per_second as f64;
        if rate == 0.0 {
            return None;
        }
        // One second of traffic, and always at least one full batch.
        let capacity = rate.max(2_500.0_f64.min(rate * 10.0));
        let mut buckets = lock(&self.rate);
        let now = Instant::now();
        let bucket = buckets.entry(source.to_string()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(capacity);
        bucket.at = now;
        if bucket.tokens >= n as f64 {
            bucket.tokens -= n as f64;
            None
        } else {
            Some(Duration::from_secs_f64((n as f64 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_forgets_after_the_window_and_beyond_the_cap() {
        let config = CollectorConfig {
            dedup_window_hours: 1,
            dedup_max_ids: 3,
            ..CollectorConfig::default()
        };
        let mut d = Dedup::new(&config);
        let hour = 3_600_000_000;
        assert!(d.insert("a", 0));
        assert!(!d.insert("a", 10), "a duplicate within the window");
        assert!(d.insert("b", 20));
        assert!(d.insert("c", 30));
        assert!(d.insert("d", 40), "the cap forgets the oldest id");
        assert!(d.insert("a", 50));
        assert!(!d.insert("d", hour));
        assert!(d.insert("b", 2 * hour), "outside the window");
        d.forget(["b"]);
        assert!(d.insert("b", 2 * hour));
    }

    #[test]
    fn open_addresses_need_write_keys() {
        let open = CollectorConfig {
            listen: "0.0.0.0:8088".parse().unwrap(),
            ..CollectorConfig::default()
        };
        assert!(
            open.validate()
                .unwrap_err()
                .to_string()
                .contains("without write keys")
        );
        let keyed = CollectorConfig {
            write_keys: [("web".to_string(), "k".to_string())].into(),
            ..open
        };
        keyed.validate().unwrap();
    }
}
