//! The lake: one object store (local folder, S3-compatible bucket or memory)
//! under one URL, and the only code that reads or writes it.
//!
//! Owns the store set-up from a URL, the layout of paths inside the lake
//! ([`paths`]), and atomic Parquet writes ([`parquet`]). It knows nothing of
//! SQL, the catalog or the wire protocol. Every write lands whole or not at
//! all: local writes go to a staging file renamed into place, S3 writes are
//! single PUTs or multipart uploads that only appear on completion.

pub mod delta;
pub mod manifest;
pub mod parquet;
pub mod paths;
mod secret;
pub mod tables;

use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreUrl;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{Error, Result};

/// Folder used when no lake URL is given: `./panorama-lake`.
pub const DEFAULT_LAKE_DIR: &str = "panorama-lake";

/// An opened lake: the store, the URL DataFusion knows it by, and the root
/// prefix every lake path is relative to.
#[derive(Debug, Clone)]
pub struct Lake {
    url: Url,
    store: Arc<dyn ObjectStore>,
    store_url: ObjectStoreUrl,
    root: Path,
    /// The tables users declared in this lake ([`tables`]), shared by
    /// every clone: one declared over SQL is seen by all sessions.
    declared: Arc<std::sync::RwLock<Vec<crate::schema::RawTable>>>,
}

impl Lake {
    /// Open the lake at `location`: a URL (`file:///abs/dir`, `memory://`,
    /// `s3://bucket/prefix`) or a plain local path. S3 settings (endpoint,
    /// region, keys, `AWS_ALLOW_HTTP`) come from the `AWS_*` environment.
    pub fn open(location: &str) -> Result<Lake> {
        Lake::open_with_options(location, &[])
    }

    /// Like [`Lake::open`], with S3 options (`aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, ...) that override the environment.
    pub fn open_with_options(location: &str, s3_options: &[(String, String)]) -> Result<Lake> {
        let url = parse_location(location)?;
        match url.scheme() {
            "file" => {
                let dir = url.to_file_path().map_err(|()| Error::LakeUrl {
                    url: location.to_string(),
                    reason: "not an absolute local path".into(),
                })?;
                std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                    what: "creating the lake folder".into(),
                    path: dir.clone(),
                    source,
                })?;
                let root = Path::from_filesystem_path(&dir).map_err(|source| {
                    Error::store(
                        format!("using {} as a lake", dir.display()),
                        object_store::Error::InvalidPath { source },
                    )
                })?;
                Ok(Lake {
                    store: Arc::new(LocalFileSystem::new()),
                    store_url: ObjectStoreUrl::local_filesystem(),
                    root,
                    url,
                    declared: Arc::default(),
                })
            }
            "memory" => Ok(Lake {
                store: Arc::new(InMemory::new()),
                store_url: ObjectStoreUrl::parse("memory://")?,
                root: Path::from(url.path()),
                url,
                declared: Arc::default(),
            }),
            "s3" => {
                let bucket = url.host_str().ok_or_else(|| Error::LakeUrl {
                    url: location.to_string(),
                    reason: "an s3 URL needs a bucket: s3://bucket/prefix".into(),
                })?;
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (key, value) in s3_options {
                    let key = key.parse().map_err(|source| {
                        Error::store(format!("unknown S3 option '{key}'"), source)
                    })?;
                    builder = builder.with_config(key, value);
                }
                let store = builder.build().map_err(|source| {
                    Error::store(format!("configuring S3 bucket '{bucket}'"), source)
                })?;
                Ok(Lake {
                    store: Arc::new(store),
                    store_url: ObjectStoreUrl::parse(format!("s3://{bucket}"))?,
                    root: Path::from(url.path()),
                    url,
                    declared: Arc::default(),
                })
            }
            other => Err(Error::LakeUrl {
                url: location.to_string(),
                reason: format!("unsupported scheme '{other}' (use file://, s3:// or memory://)"),
            }),
        }
    }

    /// The lake URL as given (normalised).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The object store holding the lake.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The URL under which DataFusion must know the store.
    pub fn store_url(&self) -> &ObjectStoreUrl {
        &self.store_url
    }

    /// The absolute store path of a path relative to the lake root.
    pub fn path(&self, relative: &Path) -> Path {
        self.root.parts().chain(relative.parts()).collect()
    }

    /// The path relative to the lake root of an absolute store path.
    pub fn relative(&self, absolute: &Path) -> Path {
        match absolute.prefix_match(&self.root) {
            Some(parts) => parts.collect(),
            None => absolute.clone(),
        }
    }

    /// The URL of a folder of the lake, as DataFusion's listing tables want it
    /// (`scheme://authority/abs/path/`).
    pub fn folder_url(&self, relative: &Path) -> String {
        let url: &Url = self.store_url.as_ref();
        let authority = url.host_str().unwrap_or_default();
        format!("{}://{authority}/{}/", url.scheme(), self.path(relative))
    }

    /// Where `relative` is on this machine's disk, for a local lake
    /// (`None` for S3 or memory).
    pub fn local_path(&self, relative: &Path) -> Option<std::path::PathBuf> {
        if self.url.scheme() != "file" {
            return None;
        }
        let dir = self.url.to_file_path().ok()?;
        Some(dir.join(relative.as_ref()))
    }

    /// Every object under a folder of the lake (recursively).
    pub async fn list(&self, relative: &Path) -> Result<Vec<ObjectMeta>> {
        let prefix = self.path(relative);
        self.store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|source| Error::store(format!("listing {prefix}"), source))
    }

    /// The files of a folder whose names end with `suffix`, as (name
    /// without the suffix, object), sorted by name.
    pub async fn files_named(
        &self,
        relative: &Path,
        suffix: &str,
    ) -> Result<Vec<(String, ObjectMeta)>> {
        let mut files: Vec<(String, ObjectMeta)> = self
            .list(relative)
            .await?
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.strip_suffix(suffix)?.to_string();
                Some((name, m))
            })
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(files)
    }

    /// Read a small object (`None` if absent): pointers, manifests, SQL.
    pub async fn get_bytes(&self, relative: &Path) -> Result<Option<bytes::Bytes>> {
        let path = self.path(relative);
        match self.store.get(&path).await {
            Ok(found) => found
                .bytes()
                .await
                .map(Some)
                .map_err(|e| Error::store(format!("reading {path}"), e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(format!("reading {path}"), e)),
        }
    }

    /// Read a JSON object written by [`Lake::put_json`] (`None` if absent).
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        relative: &Path,
    ) -> Result<Option<T>> {
        match self.get_bytes(relative).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Config(format!(
                    "{} is not what Panorama wrote: {e}",
                    self.path(relative)
                ))
            }),
        }
    }

    /// Write a small JSON object in one PUT: readers see the old or the new
    /// one, never a mix (how manifests and table pointers switch).
    pub async fn put_json<T: serde::Serialize>(&self, relative: &Path, value: &T) -> Result<()> {
        let path = self.path(relative);
        let json = serde_json::to_vec_pretty(value)
            .map_err(|e| Error::Internal(format!("encoding {path}: {e}")))?;
        self.store
            .put(&path, object_store::PutPayload::from(json))
            .await
            .map_err(|e| Error::store(format!("writing {path}"), e))?;
        Ok(())
    }

    /// Whether the lake has no raw data yet (used to seed a fresh lake).
    pub async fn has_raw_data(&self) -> Result<bool> {
        let prefix = self.path(&paths::raw_root());
        let first = self
            .store
            .list(Some(&prefix))
            .try_next()
            .await
            .map_err(|source| Error::store(format!("listing {prefix}"), source))?;
        Ok(first.is_some())
    }
}

/// Turn a user's `--lake` value into a URL; plain paths become `file://`.
fn parse_location(location: &str) -> Result<Url> {
    if location.contains("://") {
        return Url::parse(location).map_err(|e| Error::LakeUrl {
            url: location.to_string(),
            reason: e.to_string(),
        });
    }
    let path = std::path::Path::new(location);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| Error::Io {
                what: "reading the working directory".into(),
                path: path.to_path_buf(),
                source,
            })?
            .join(path)
    };
    Url::from_directory_path(&absolute).map_err(|()| Error::LakeUrl {
        url: location.to_string(),
        reason: "not a usable local path".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_become_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(lake.url().scheme(), "file");
        let url = lake.folder_url(&Path::from("raw/events"));
        assert!(url.starts_with("file:///"), "{url}");
        assert!(url.ends_with("/raw/events/"), "{url}");
    }

    #[test]
    fn s3_urls_keep_their_prefix() {
        let lake = Lake::open_with_options(
            "s3://bucket/some/prefix",
            &[
                ("aws_region".into(), "us-east-1".into()),
                ("aws_endpoint".into(), "http://127.0.0.1:9".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            lake.folder_url(&Path::from("raw/orders")),
            "s3://bucket/some/prefix/raw/orders/"
        );
    }

    #[test]
    fn unknown_schemes_are_refused() {
        let err = Lake::open("ftp://host/x").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme 'ftp'"), "{err}");
    }
}
