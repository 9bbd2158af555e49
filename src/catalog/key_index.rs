//! The data of the lookup index: for each key column of a raw table, the
//! hashes of every value in every file, sorted, each with where it is (file
//! and row); how a file's keys are read, how the index changes as files
//! come and go, and how to find the rows holding given values.
//!
//! 16 bytes per indexed value (a `u64` hash and a `u64` location); a file's
//! keys are read once (only the key columns), and a change of the file
//! list merges the new files' hashes into the kept ones. Hashes are DataFusion's
//! `create_hashes` with a fixed seed, of values cast to the table's column
//! type, so a literal hashes as the stored value does. Equal hashes do not
//! prove equal values: the caller re-checks every row it reads.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::parquet::arrow::ProjectionMask;
use futures::StreamExt;
use object_store::ObjectMeta;

use crate::error::{Error, Result};
use crate::lake::Lake;

/// The one hash state of every lookup index (fixed: hashes are compared
/// across files and queries).
const HASH: RandomState = RandomState::with_seed(0x7061_6e6f_7261_6d61);

/// Hash `values` as stored in a column of type `column_type`; `None` when a
/// value cannot be represented in that type (the lookup then falls back to
/// a scan). Null values are left out: `= NULL` matches no row.
pub(super) fn hash_values(values: &[ScalarValue], column_type: &DataType) -> Option<Vec<u64>> {
    let mut hashes = Vec::with_capacity(values.len());
    for value in values.iter().filter(|v| !v.is_null()) {
        let array = value.to_array_of_size(1).ok()?;
        let array = cast(&array, column_type).ok()?;
        if array.is_null(0) {
            return None;
        }
        hashes.push(hash_array(&array).ok()?[0]);
    }
    Some(hashes)
}

fn hash_array(array: &ArrayRef) -> datafusion::error::Result<Vec<u64>> {
    let mut hashes = vec![0; array.len()];
    create_hashes([array], &HASH, &mut hashes)?;
    Ok(hashes)
}

/// Every indexed value of one key column of a table: hashes sorted, each
/// with its location (file number << 32 | row).
#[derive(Debug, Default)]
struct Merged {
    hashes: Vec<u64>,
    locations: Vec<u64>,
}

impl Merged {
    /// Merge two sorted runs of `(hash, location)`.
    fn merge(a: impl Iterator<Item = (u64, u64)>, b: Vec<(u64, u64)>, len: usize) -> Merged {
        let mut merged = Merged {
            hashes: Vec::with_capacity(len),
            locations: Vec::with_capacity(len),
        };
        let mut b = b.into_iter().peekable();
        for (hash, location) in a {
            while let Some(&(h, l)) = b.peek()
                && h < hash
            {
                merged.hashes.push(h);
                merged.locations.push(l);
                b.next();
            }
            merged.hashes.push(hash);
            merged.locations.push(location);
        }
        for (h, l) in b {
            merged.hashes.push(h);
            merged.locations.push(l);
        }
        merged
    }

    fn locations_of(&self, hash: u64, out: &mut Vec<u64>) {
        let start = self.hashes.partition_point(|h| *h < hash);
        let end = start + self.hashes[start..].partition_point(|h| *h == hash);
        out.extend_from_slice(&self.locations[start..end]);
    }
}

/// One Parquet file of an indexed table.
#[derive(Debug)]
pub(super) struct IndexedFile {
    /// The file as listed when it was indexed (a rewrite changes its size
    /// or time, and it is indexed again).
    pub meta: ObjectMeta,
    /// Its partition values (the `date` of its folder).
    pub partition_values: Vec<ScalarValue>,
    /// Rows in the file.
    pub rows: u32,
}

/// A file just read: its key hashes, per key, with their rows.
#[derive(Debug)]
pub(super) struct NewFile {
    file: IndexedFile,
    keys: Vec<Vec<(u64, u32)>>,
}

impl NewFile {
    /// Read the key columns (`keys`, positions in `schema`, the table's
    /// file schema) of the file `meta` and hash them.
    pub(super) async fn read(
        lake: &Lake,
        meta: ObjectMeta,
        partition_values: Vec<ScalarValue>,
        schema: &SchemaRef,
        keys: &[usize],
    ) -> Result<NewFile> {
        let builder = crate::lake::parquet::open(lake, &meta).await?;
        // Where each key column sits in this file (a file written before a
        // column existed has none: its values are all null).
        let in_file: Vec<usize> = keys
            .iter()
            .filter_map(|&k| builder.schema().index_of(schema.field(k).name()).ok())
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), in_file);
        let mut stream = builder
            .with_projection(mask)
            .with_batch_size(64 * 1024)
            .build()
            .map_err(|e| Error::parquet(format!("reading {}", meta.location), e))?;
        let mut pairs: Vec<Vec<(u64, u32)>> = vec![Vec::new(); keys.len()];
        let mut row: u32 = 0;
        while let Some(batch) = stream.next().await {
            let batch =
                batch.map_err(|e| Error::parquet(format!("reading {}", meta.location), e))?;
            for (k, &key) in keys.iter().enumerate() {
                let field = schema.field(key);
                let Some(column) = batch.column_by_name(field.name()) else {
                    continue;
                };
                let column = cast(column, field.data_type()).map_err(|e| {
                    Error::arrow(format!("{}: column {}", meta.location, field.name()), e)
                })?;
                let hashes = hash_array(&column).map_err(|e| {
                    Error::Internal(format!("{}: hashing {}: {e}", meta.location, field.name()))
                })?;
                pairs[k].extend(
                    hashes
                        .into_iter()
                        .zip(row..)
                        .enumerate()
                        .filter(|(i, _)| column.is_valid(*i))
                        .map(|(_, pair)| pair),
                );
            }
            row = u32::try_from(batch.num_rows())
                .ok()
                .and_then(|n| row.checked_add(n))
                .ok_or_else(|| {
                    Error::Config(format!("{} has more than 2^32 rows", meta.location))
                })?;
        }
        Ok(NewFile {
            file: IndexedFile {
                meta,
                partition_values,
                rows: row,
            },
            keys: pairs,
        })
    }

    /// Rows in the file.
    pub(super) fn rows(&self) -> u32 {
        self.file.rows
    }
}

/// The key index of a table's files (as of one listing): one sorted run of
/// hashes per key column, 16 bytes per indexed value.
#[derive(Debug, Default)]
pub(super) struct TableKeys {
    files: Vec<Arc<IndexedFile>>,
    merged: Vec<Merged>,
}

impl TableKeys {
    /// The files indexed.
    pub(super) fn files(&self) -> &[Arc<IndexedFile>] {
        &self.files
    }

    /// This index with only the files at positions `kept` (in that order)
    /// and the files `new` added; the kept files are not read again.
    pub(super) fn changed(&self, kept: &[usize], new: Vec<NewFile>, keys: usize) -> TableKeys {
        let mut renumber = vec![u32::MAX; self.files.len()];
        for (now, &before) in kept.iter().enumerate() {
            renumber[before] = now as u32;
        }
        let first_new = kept.len() as u64;
        let merged = (0..keys)
            .map(|k| {
                let mut fresh: Vec<(u64, u64)> = new
                    .iter()
                    .enumerate()
                    .flat_map(|(i, f)| {
                        let file = (first_new + i as u64) << 32;
                        f.keys[k]
                            .iter()
                            .map(move |&(h, row)| (h, file | u64::from(row)))
                    })
                    .collect();
                fresh.sort_unstable();
                let old = self.merged.get(k);
                let len = old.map_or(0, |m| m.hashes.len()) + fresh.len();
                let kept_entries = old.into_iter().flat_map(|m| {
                    m.hashes
                        .iter()
                        .zip(&m.locations)
                        .filter_map(|(&h, &location)| {
                            let file = renumber[(location >> 32) as usize];
                            (file != u32::MAX)
                                .then(|| (h, (u64::from(file) << 32) | (location & 0xffff_ffff)))
                        })
                });
                Merged::merge(kept_entries, fresh, len)
            })
            .collect();
        let mut files: Vec<Arc<IndexedFile>> =
            kept.iter().map(|&i| Arc::clone(&self.files[i])).collect();
        files.extend(new.into_iter().map(|f| Arc::new(f.file)));
        TableKeys { files, merged }
    }

    /// The files holding a value of key `key` (a position in the keys the
    /// index was built with) that hashes to one of `hashes`, each with its
    /// rows (sorted, each once).
    pub(super) fn find(&self, key: usize, hashes: &[u64]) -> Vec<(&Arc<IndexedFile>, Vec<u32>)> {
        let mut locations = Vec::new();
        if let Some(merged) = self.merged.get(key) {
            for &hash in hashes {
                merged.locations_of(hash, &mut locations);
            }
        }
        locations.sort_unstable();
        locations.dedup();
        let mut found: Vec<(&Arc<IndexedFile>, Vec<u32>)> = Vec::new();
        for location in locations {
            let file = &self.files[(location >> 32) as usize];
            let row = (location & 0xffff_ffff) as u32;
            match found.last_mut() {
                Some((f, rows)) if Arc::ptr_eq(f, file) => rows.push(row),
                _ => found.push((file, vec![row])),
            }
        }
        found
    }

    /// Bytes the index holds.
    pub(super) fn memory(&self) -> usize {
        self.merged.iter().map(|m| m.hashes.len() * 16).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    fn file(name: &str, values: &[&str]) -> NewFile {
        let stored: ArrayRef = Arc::new(StringArray::from(values.to_vec()));
        let hashes = hash_array(&stored).unwrap();
        NewFile {
            file: IndexedFile {
                meta: ObjectMeta {
                    location: name.into(),
                    last_modified: chrono::Utc::now(),
                    size: 1,
                    e_tag: None,
                    version: None,
                },
                partition_values: vec![],
                rows: values.len() as u32,
            },
            keys: vec![hashes.into_iter().zip(0..).collect()],
        }
    }

    fn found(index: &TableKeys, values: &[ScalarValue]) -> Vec<(String, Vec<u32>)> {
        let hashes = hash_values(values, &DataType::Utf8).unwrap();
        index
            .find(0, &hashes)
            .into_iter()
            .map(|(f, rows)| (f.meta.location.to_string(), rows))
            .collect()
    }

    fn text(value: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(value.into()))
    }

    #[test]
    fn lookups_find_every_row_of_a_value_across_files_as_files_come_and_go() {
        let index = TableKeys::default().changed(
            &[],
            vec![file("a", &["C1", "C2", "C1"]), file("b", &["C3", "C1"])],
            1,
        );
        assert_eq!(
            found(&index, &[text("C1"), ScalarValue::Utf8(None)]),
            [("a".to_string(), vec![0, 2]), ("b".to_string(), vec![1])],
            "every row, grouped by file; the null is left out"
        );
        // A literal of another string type hashes as the stored value.
        assert_eq!(
            found(&index, &[ScalarValue::Utf8View(Some("C3".into()))]),
            [("b".to_string(), vec![0])]
        );
        assert!(found(&index, &[text("C9")]).is_empty());
        // File a goes away, c arrives: b is kept without being read again.
        let index = index.changed(&[1], vec![file("c", &["C2", "C1"])], 1);
        assert_eq!(
            found(&index, &[text("C1"), text("C2")]),
            [("b".to_string(), vec![1]), ("c".to_string(), vec![0, 1])]
        );
        assert_eq!(index.memory(), 4 * 16);
        // A value the column type cannot hold makes the lookup fall back.
        assert!(hash_values(&[text("x")], &DataType::Int64).is_none());
    }
}
