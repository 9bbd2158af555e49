//! The collector's write-ahead log: what a `200` promises is on disk.
//!
//! Requests hand their encoded records to one writer thread, which writes
//! every record waiting at that moment and then calls `fdatasync` once for
//! all of them (group commit), and only then answers each request. The log
//! is a folder of segments `wal-<seq>.log`; each record is framed as
//! `[length u32][crc32 u32][payload]` so a torn write at the tail after a
//! crash is recognised and ignored (it was never acknowledged). The flusher
//! seals the current segment ([`Wal::rotate`]), turns sealed segments into
//! Parquet and only then removes them; segments found at start-up are the
//! ones a crash left, and are flushed first. The folder carries a random id
//! (`wal.id`) from which lake file names derive, so replaying a segment
//! rewrites the same files instead of adding copies.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::{Error, Result};

const FRAME_HEADER: usize = 8;

/// A segment the writer no longer appends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub seq: u64,
    pub path: PathBuf,
}

enum Command {
    Append {
        payload: Vec<u8>,
        done: oneshot::Sender<std::result::Result<(), String>>,
    },
    Rotate(oneshot::Sender<std::result::Result<Option<Sealed>, String>>),
}

/// Handle on the log; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    dir: PathBuf,
    id: Uuid,
    tx: mpsc::UnboundedSender<Command>,
    /// Bytes in all segments on disk (sealed and current).
    bytes: Arc<AtomicU64>,
}

impl Wal {
    /// Open (or create) the log in `dir`. Returns the segments a previous
    /// process left behind, oldest first, to be flushed before anything new.
    pub fn open(dir: &Path) -> Result<(Wal, Vec<Sealed>)> {
        let io = |what: &str, source| Error::Io {
            what: what.into(),
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("creating the write-ahead log folder", e))?;
        let id = wal_id(dir)?;
        let mut left = Vec::new();
        let mut bytes = 0;
        for entry in std::fs::read_dir(dir).map_err(|e| io("listing the write-ahead log", e))? {
            let entry = entry.map_err(|e| io("listing the write-ahead log", e))?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix("wal-")?.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            left.push(Sealed {
                seq,
                path: entry.path(),
            });
        }
        left.sort_by_key(|s| s.seq);
        let next = left.last().map_or(1, |s| s.seq + 1);
        let bytes = Arc::new(AtomicU64::new(bytes));
        let (tx, rx) = mpsc::unbounded_channel();
        let file = create_segment(dir, next)?;
        let writer = Writer {
            dir: dir.to_path_buf(),
            seq: next,
            file,
            len: 0,
            bytes: bytes.clone(),
        };
        std::thread::Builder::new()
            .name("panorama-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io("starting the write-ahead log writer", e))?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            id,
            tx,
            bytes,
        };
        Ok((wal, left))
    }

    /// The folder's id: lake files written from its segments derive from it.
    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes the log holds on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Append one record; returns once it is on disk (fsynced).
    pub async fn append(&self, payload: Vec<u8>) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::Append { payload, done })
            .map_err(|_| self.stopped())?;
        wait.await
            .map_err(|_| self.stopped())?
            .map_err(|reason| Error::Collector(format!("writing the write-ahead log: {reason}")))
    }

    /// Seal the current segment (if it holds anything) and start a new one.
    pub async fn rotate(&self) -> Result<Option<Sealed>> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::Rotate(done))
            .map_err(|_| self.stopped())?;
        wait.await
            .map_err(|_| self.stopped())?
            .map_err(|reason| Error::Collector(format!("sealing a log segment: {reason}")))
    }

    /// Forget a sealed segment whose records are safely in the lake.
    pub fn remove(&self, sealed: &Sealed) -> Result<()> {
        let len = std::fs::metadata(&sealed.path).map_or(0, |m| m.len());
        std::fs::remove_file(&sealed.path).map_err(|source| Error::Io {
            what: "removing a flushed log segment".into(),
            path: sealed.path.clone(),
            source,
        })?;
        self.bytes.fetch_sub(len, Ordering::Relaxed);
        Ok(())
    }

    fn stopped(&self) -> Error {
        Error::Collector("the write-ahead log writer has stopped".into())
    }
}

/// The records of a sealed segment, and a description of anything after
/// the last whole record (a torn write from a crash, or damage).
pub fn read_segment(sealed: &Sealed) -> Result<(Vec<Vec<u8>>, Option<String>)> {
    let mut data = Vec::new();
    File::open(&sealed.path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|source| Error::Io {
            what: "reading a log segment".into(),
            path: sealed.path.clone(),
            source,
        })?;
    let mut records = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < FRAME_HEADER {
            return Ok((records, Some(torn(at, data.len()))));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(payload) = rest.get(FRAME_HEADER..FRAME_HEADER + len) else {
            return Ok((records, Some(torn(at, data.len()))));
        };
        if crc32fast::hash(payload) != crc {
            return Ok((
                records,
                Some(format!(
                    "record at byte {at} fails its checksum; {} bytes from there were not read",
                    data.len() - at
                )),
            ));
        }
        records.push(payload.to_vec());
        at += FRAME_HEADER + len;
    }
    Ok((records, None))
}

fn torn(at: usize, len: usize) -> String {
    format!(
        "incomplete record at byte {at} ({} bytes, never acknowledged: written when the process stopped)",
        len - at
    )
}

/// The folder's id, made on first use.
fn wal_id(dir: &Path) -> Result<Uuid> {
    let path = dir.join("wal.id");
    let io = |what: &str, source| Error::Io {
        what: what.into(),
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Uuid::parse_str(text.trim())
            .map_err(|e| Error::Config(format!("{}: not a log id ({e})", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::new_v4();
            let tmp = dir.join("wal.id.tmp");
            std::fs::write(&tmp, id.to_string()).map_err(|e| io("writing the log id", e))?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("writing the log id", e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io("writing the log id", e))?;
            sync_dir(dir)?;
            Ok(id)
        }
        Err(e) => Err(io("reading the log id", e)),
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:016}.log"))
}

fn create_segment(dir: &Path, seq: u64) -> Result<File> {
    let path = segment_path(dir, seq);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| Error::Io {
            what: "creating a log segment".into(),
            path,
            source,
        })?;
    // The new name must survive a crash too.
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            what: "syncing the write-ahead log folder".into(),
            path: dir.to_path_buf(),
            source,
        })
}

struct Writer {
    dir: PathBuf,
    seq: u64,
    file: File,
    /// Bytes in the current segment.
    len: u64,
    bytes: Arc<AtomicU64>,
}

type Waiting = Vec<oneshot::Sender<std::result::Result<(), String>>>;

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut buf = Vec::new();
        let mut waiting: Waiting = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            // Everything already queued joins this group.
            while let Some(command) = next.take().or_else(|| rx.try_recv().ok()) {
                match command {
                    Command::Append { payload, done } => {
                        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
                        buf.extend_from_slice(&payload);
                        waiting.push(done);
                        if buf.len() > 8 << 20 {
                            self.commit(&mut buf, &mut waiting);
                        }
                    }
                    Command::Rotate(done) => {
                        self.commit(&mut buf, &mut waiting);
                        let _ = done.send(self.seal());
                    }
                }
            }
            self.commit(&mut buf, &mut waiting);
        }
        // Every handle is gone: what was written is synced already.
    }

    /// Write and sync the group, then answer every request in it.
    fn commit(&mut self, buf: &mut Vec<u8>, waiting: &mut Waiting) {
        if buf.is_empty() {
            return;
        }
        let result = self
            .file
            .write_all(buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| e.to_string());
        match &result {
            Ok(()) => {
                self.len += buf.len() as u64;
                self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                // Cut a partial write off so later records stay readable; if
                // that fails too, continue in a fresh segment.
                if self.file.set_len(self.len).is_err()
                    && let Ok(file) = create_segment(&self.dir, self.seq + 1)
                {
                    self.seq += 1;
                    self.file = file;
                    self.len = 0;
                }
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(result.clone());
        }
        buf.clear();
    }

    fn seal(&mut self) -> std::result::Result<Option<Sealed>, String> {
        if self.len == 0 {
            return Ok(None);
        }
        let file = create_segment(&self.dir, self.seq + 1).map_err(|e| e.to_string())?;
        let sealed = Sealed {
            seq: self.seq,
            path: segment_path(&self.dir, self.seq),
        };
        self.seq += 1;
        self.file = file;
        self.len = 0;
        Ok(Some(sealed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_reopen_and_a_torn_tail_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, left) = Wal::open(dir.path()).unwrap();
        assert!(left.is_empty());
        let id = wal.id();
        let writes: Vec<_> = (0..50)
            .map(|i| {
                let wal = wal.clone();
                tokio::spawn(async move { wal.append(format!("record {i}").into_bytes()).await })
            })
            .collect();
        for w in writes {
            w.await.unwrap().unwrap();
        }
        let sealed = wal.rotate().await.unwrap().unwrap();
        assert_eq!(wal.rotate().await.unwrap(), None, "nothing new to seal");
        wal.append(b"after".to_vec()).await.unwrap();
        drop(wal);
        // A crash in the middle of a write leaves half a frame.
        let current = segment_path(dir.path(), sealed.seq + 1);
        let mut f = OpenOptions::new().append(true).open(&current).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();

        let (wal, left) = Wal::open(dir.path()).unwrap();
        assert_eq!(wal.id(), id, "the log keeps its id");
        assert_eq!(left.len(), 2);
        let (records, problem) = read_segment(&left[0]).unwrap();
        let mut texts: Vec<String> = records
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect();
        texts.sort();
        assert_eq!(texts.len(), 50);
        assert!(texts.contains(&"record 7".to_string()));
        assert_eq!(problem, None);
        let (records, problem) = read_segment(&left[1]).unwrap();
        assert_eq!(records, vec![b"after".to_vec()]);
        assert!(problem.unwrap().starts_with("incomplete record at byte 13"));
        // New appends go to a new segment after the old ones.
        wal.append(b"new".to_vec()).await.unwrap();
        let sealed = wal.rotate().await.unwrap().unwrap();
        assert_eq!(sealed.seq, left[1].seq + 1);
        for s in &left {
            wal.remove(s).unwrap();
        }
    }
}
