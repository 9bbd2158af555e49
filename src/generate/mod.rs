//! `panorama generate`: a deterministic, realistic synthetic CDP.
//!
//! [`model`] derives people and products from `(seed, index)`; [`sim`]
//! plays one year day by day and produces each day's rows of every raw
//! table; this module streams those days to an [`Output`] — day-partitioned
//! files in a lake, or one compact file per table (how the bundled sample
//! is stored). Simulation runs on a blocking thread and hands days over a
//! small bounded channel, so memory stays bounded while Parquet encoding
//! and writes overlap with simulation. `datasets/README.md` documents the
//! model and its proportions.

pub mod model;
pub mod sim;

use std::collections::BTreeMap;
use std::path::PathBuf;

use datafusion::arrow::record_batch::RecordBatch;
use object_store::path::Path;

use crate::error::{Error, Result};
use crate::ingest::{self, Landed};
use crate::lake::Lake;
use crate::lake::parquet::ParquetFileWriter;
use crate::schema::RawTable;

pub use sim::Population;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct GenerateOptions {
    /// Thousands of known customers.
    pub scale: u32,
    /// Random seed: the same `(scale, seed)` always gives the same data.
    pub seed: u64,
}

/// Where generated data goes.
pub enum Output<'a> {
    /// Day-partitioned raw tables in a lake.
    Lake(&'a Lake),
    /// One `<table>.parquet` per table in a local folder (the bundled sample).
    Files(PathBuf),
}

/// Rows and files written, per table.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub tables: BTreeMap<RawTable, Landed>,
}

impl Summary {
    pub fn rows(&self) -> usize {
        self.tables.values().map(|l| l.rows).sum()
    }
}

/// Progress of a generation: days done out of days total.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub days_done: u32,
    pub days_total: u32,
    pub rows: usize,
}

/// Generate and write a synthetic CDP, reporting progress after each day.
pub async fn generate(
    options: GenerateOptions,
    output: Output<'_>,
    mut progress: impl FnMut(Progress),
) -> Result<Summary> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(u32, Vec<RecordBatch>)>>(4);
    let producer = tokio::task::spawn_blocking(move || {
        let mut simulation = sim::Simulation::new(options.scale, options.seed);
        while let Some((day, mut rows)) = simulation.next_day() {
            let batches: Result<Vec<RecordBatch>> =
                rows.tables.iter_mut().map(|t| t.finish()).collect();
            let failed = batches.is_err();
            if tx.blocking_send(batches.map(|b| (day, b))).is_err() || failed {
                break; // the writer stopped: it reports why
            }
        }
    });

    let mut sink = Sink::new(output)?;
    let mut summary = Summary::default();
    let mut rows = 0;
    while let Some(day) = rx.recv().await {
        let (day, batches) = day?;
        for (table, batch) in RawTable::ALL.into_iter().zip(batches) {
            rows += batch.num_rows();
            let landed = sink.write(table, batch).await?;
            *summary.tables.entry(table).or_default() += landed;
        }
        progress(Progress {
            days_done: day + 1,
            days_total: model::DAYS,
            rows,
        });
    }
    producer
        .await
        .map_err(|e| Error::Config(format!("the generator thread failed: {e}")))?;
    for (table, landed) in sink.finish().await? {
        *summary.tables.entry(table).or_default() += landed;
    }
    Ok(summary)
}

/// Rows of one table the lake sink gathers before landing them as one
/// commit: a few large commits (each day still gets its own files) rather
/// than one small commit per table and day.
const LAND_ROWS: usize = 250_000;

enum Sink<'a> {
    Lake {
        lake: &'a Lake,
        gathered: BTreeMap<RawTable, (Vec<RecordBatch>, usize)>,
    },
    Files {
        writers: BTreeMap<RawTable, ParquetFileWriter>,
    },
}

impl<'a> Sink<'a> {
    fn new(output: Output<'a>) -> Result<Sink<'a>> {
        Ok(match output {
            Output::Lake(lake) => Sink::Lake {
                lake,
                gathered: BTreeMap::new(),
            },
            Output::Files(dir) => {
                std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                    what: "creating the output folder".into(),
                    path: dir.clone(),
                    source,
                })?;
                let lake = Lake::open(&dir.to_string_lossy())?;
                let mut writers = BTreeMap::new();
                for table in RawTable::ALL {
                    let path = Path::from(format!("{}.parquet", table.name()));
                    writers.insert(
                        table,
                        ParquetFileWriter::create(&lake, &path, table.file_schema())?,
                    );
                }
                Sink::Files { writers }
            }
        })
    }

    async fn write(&mut self, table: RawTable, batch: RecordBatch) -> Result<Landed> {
        if batch.num_rows() == 0 {
            return Ok(Landed::default());
        }
        match self {
            Sink::Lake { lake, gathered } => {
                let (batches, rows) = gathered.entry(table).or_default();
                *rows += batch.num_rows();
                batches.push(batch);
                if *rows < LAND_ROWS {
                    return Ok(Landed::default());
                }
                let batches = std::mem::take(batches);
                *rows = 0;
                ingest::land(lake, table, &batches).await
            }
            Sink::Files { writers, .. } => {
                let rows = batch.num_rows();
                if let Some(writer) = writers.get_mut(&table) {
                    writer.write(&batch).await?;
                }
                Ok(Landed { files: 0, rows })
            }
        }
    }

    /// Land what is gathered or close open files; returns what each table
    /// got.
    async fn finish(self) -> Result<Vec<(RawTable, Landed)>> {
        let mut done = Vec::new();
        match self {
            Sink::Files { writers } => {
                for (table, writer) in writers {
                    writer.finish().await?;
                    done.push((table, Landed { files: 1, rows: 0 }));
                }
            }
            Sink::Lake { lake, gathered } => {
                for (table, (batches, _)) in gathered {
                    done.push((table, ingest::land(lake, table, &batches).await?));
                }
            }
        }
        Ok(done)
    }
}
