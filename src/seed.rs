//! The bundled sample CDP, compiled into the binary, and the seeding of an
//! empty lake with it on first start.
//!
//! `datasets/sample/<table>.parquet` holds one compact file per raw table
//! (`panorama generate --scale 1 --seed 42 --files datasets/sample`
//! regenerates it). Seeding lands those rows through the normal write path,
//! so the lake gets the usual day-partitioned layout.

use bytes::Bytes;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::ingest::{self, Landed};
use crate::lake::Lake;
use crate::schema::RawTable;

/// Scale and seed the bundled sample was generated with.
pub const SAMPLE_SCALE: u32 = 1;
/// Seed of the bundled sample.
pub const SAMPLE_SEED: u64 = 42;

fn sample_file(table: RawTable) -> &'static [u8] {
    match table {
        RawTable::Events => include_bytes!("../datasets/sample/events.parquet"),
        RawTable::Customers => include_bytes!("../datasets/sample/customers.parquet"),
        RawTable::Orders => include_bytes!("../datasets/sample/orders.parquet"),
        RawTable::OrderItems => include_bytes!("../datasets/sample/order_items.parquet"),
        RawTable::Products => include_bytes!("../datasets/sample/products.parquet"),
        RawTable::SurveyResponses => {
            include_bytes!("../datasets/sample/survey_responses.parquet")
        }
        RawTable::Consents => include_bytes!("../datasets/sample/consents.parquet"),
        // Declared tables have no sample rows.
        _ => &[],
    }
}

/// Land the bundled sample into `lake`, table by table.
pub async fn seed(lake: &Lake, mut progress: impl FnMut(RawTable, Landed)) -> Result<Landed> {
    let mut total = Landed::default();
    for table in RawTable::ALL {
        let bytes = Bytes::from_static(sample_file(table));
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.with_batch_size(64 * 1024).build())
            .map_err(|e| Error::parquet(format!("reading the bundled sample of raw.{table}"), e))?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::arrow(format!("decoding the bundled sample of raw.{table}"), e))?;
        let landed = ingest::land(lake, table, &batches).await?;
        progress(table, landed);
        total += landed;
    }
    Ok(total)
}

/// Seed `lake` if it holds no raw data yet; returns what was landed.
pub async fn seed_if_empty(
    lake: &Lake,
    progress: impl FnMut(RawTable, Landed),
) -> Result<Option<Landed>> {
    if lake.has_raw_data().await? {
        return Ok(None);
    }
    seed(lake, progress).await.map(Some)
}
