//! Inputs of `panorama ingest` named by URL: `https://…` (and `http://`)
//! and `s3://bucket/key` (any S3-compatible server, with the same `AWS_*`
//! settings as the lake). Each is streamed to a local file in a temporary
//! folder, keeping its name (so `.csv.gz` is still recognised), and then
//! loaded like any file: memory stays bounded, the content hash makes a
//! second load of the same data a no-op, and the URL is the source named
//! in `system.ingests` and `system.rejects`.

use std::io::Write;
use std::path::{Path as FsPath, PathBuf};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::error::{Error, Result};
use crate::lake::Lake;

/// Whether a command-line input is a URL rather than a local path.
pub fn is_url(input: &str) -> bool {
    ["http://", "https://", "s3://"]
        .iter()
        .any(|scheme| input.starts_with(scheme))
}

/// Download `url` into `dir`; `progress` gets the bytes received so far.
pub async fn download(url: &str, dir: &FsPath, mut progress: impl FnMut(u64)) -> Result<PathBuf> {
    let parsed = url::Url::parse(url).map_err(|e| Error::Config(format!("'{url}': {e}")))?;
    let name = parsed
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::Config(format!("'{url}' does not name a file")))?
        .to_string();
    let target = dir.join(&name);
    let io = |source| Error::Io {
        what: format!("saving {url}"),
        path: target.clone(),
        source,
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(&target).map_err(io)?);
    let mut received = 0u64;
    let failed = |reason: String| Error::Config(format!("downloading {url}: {reason}"));
    match parsed.scheme() {
        "s3" => {
            let bucket = parsed.host_str().unwrap_or_default();
            let lake = Lake::open(&format!("s3://{bucket}"))?;
            let key = Path::from(parsed.path().trim_start_matches('/'));
            let mut stream = lake
                .store()
                .get(&key)
                .await
                .map_err(|e| Error::store(format!("reading {url}"), e))?
                .into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| Error::store(format!("reading {url}"), e))?;
                file.write_all(&chunk).map_err(io)?;
                received += chunk.len() as u64;
                progress(received);
            }
        }
        _ => {
            let response = reqwest::get(url).await.map_err(|e| failed(e.to_string()))?;
            if !response.status().is_success() {
                return Err(failed(format!("the server answered {}", response.status())));
            }
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| failed(e.to_string()))?;
                file.write_all(&chunk).map_err(io)?;
                received += chunk.len() as u64;
                progress(received);
            }
        }
    }
    file.flush().map_err(io)?;
    Ok(target)
}
