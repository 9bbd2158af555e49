//! The raw tables of the lake and their Arrow schemas, defined once here.
//!
//! Every raw table is a Delta table under `raw/<table>/`; its rows carry
//! `date` ([`DAY_COLUMN`], the UTC day of the row's business time) after
//! the columns below. Types are the ones BI tools understand:
//! `timestamptz` (microseconds, UTC), `numeric(12,2)` for money, `text`,
//! `int8`, `bool`, `date`. JSON payloads (`properties`, `traits`,
//! `context`, and every table's `extra`) are text holding a JSON object. `sql/schema.sql` documents the same
//! tables for users; a unit test keeps the two in step.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;

/// The column every raw table has: the UTC day of the row's business time.
pub const DAY_COLUMN: &str = "date";

/// The last column of every raw table: a JSON object of the fields a
/// source sent that no column of the table holds (a file's extra columns,
/// a collector message's unknown keys), so nothing a user sent is dropped
/// unless they ask (`panorama ingest --drop`). JSON, not new columns: a
/// CSV field's type is unknown, a new column's content is unknown too (it
/// is masked for analysts like every JSON column, key by key, until an
/// administrator allows a key), and the tables BI dashboards and other
/// engines read keep a stable schema.
pub const EXTRA_COLUMN: &str = "extra";

/// Precision and scale of money columns (`numeric(12,2)`).
pub const MONEY_PRECISION: u8 = 12;
/// Scale of money columns.
pub const MONEY_SCALE: i8 = 2;

pub mod declared;
pub mod rows;

/// One of the raw tables landed in the lake: a built-in table (the
/// constants below) or one a user declared ([`declared`]). A small `Copy`
/// handle; a declared table's definition lives in [`declared`]'s registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawTable(u16);

/// How many raw tables are built in.
const BUILT_IN: u16 = 7;

// The built-in tables read like enum variants (`RawTable::Orders`), which
// they were before tables could be declared, and can be matched on.
#[allow(non_upper_case_globals)]
impl RawTable {
    pub const Events: RawTable = RawTable(0);
    pub const Customers: RawTable = RawTable(1);
    pub const Orders: RawTable = RawTable(2);
    pub const OrderItems: RawTable = RawTable(3);
    pub const Products: RawTable = RawTable(4);
    pub const SurveyResponses: RawTable = RawTable(5);
    pub const Consents: RawTable = RawTable(6);
}

impl RawTable {
    /// Every built-in raw table, in a stable order. A lake's tables,
    /// declared ones included, are [`crate::lake::Lake::raw_tables`].
    pub const ALL: [RawTable; 7] = [
        RawTable::Events,
        RawTable::Customers,
        RawTable::Orders,
        RawTable::OrderItems,
        RawTable::Products,
        RawTable::SurveyResponses,
        RawTable::Consents,
    ];

    /// The handle of a declared table (the same for the same declaration).
    pub fn declare(declaration: &declared::Declaration) -> RawTable {
        RawTable::declared_at(declared::intern(declaration))
    }

    /// The handle of the declaration at `index` of the registry.
    fn declared_at(index: usize) -> RawTable {
        RawTable(BUILT_IN + u16::try_from(index).unwrap_or(u16::MAX - BUILT_IN))
    }

    /// A declared table's definition; `None` for a built-in one.
    pub fn declaration(self) -> Option<&'static declared::Declaration> {
        self.0
            .checked_sub(BUILT_IN)
            .and_then(|i| declared::get(usize::from(i)))
    }

    /// Whether a user declared this table.
    pub fn is_declared(self) -> bool {
        self.0 >= BUILT_IN
    }

    /// The SQL name of the table inside the `raw` schema.
    pub fn name(self) -> &'static str {
        match self {
            RawTable::Events => "events",
            RawTable::Customers => "customers",
            RawTable::Orders => "orders",
            RawTable::OrderItems => "order_items",
            RawTable::Products => "products",
            RawTable::SurveyResponses => "survey_responses",
            RawTable::Consents => "consents",
            _ => self.declaration().map_or("", |d| d.name.as_str()),
        }
    }

    /// Look a table up by its SQL name: a built-in one, or the latest
    /// declaration this process has seen by that name.
    pub fn from_name(name: &str) -> Option<RawTable> {
        RawTable::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .or_else(|| declared::latest(name).map(RawTable::declared_at))
    }

    /// The column holding the row's business time; its day is the partition.
    pub fn time_column(self) -> &'static str {
        match self {
            RawTable::Events => "timestamp",
            RawTable::Customers | RawTable::Products => "updated_at",
            RawTable::Orders | RawTable::OrderItems => "ordered_at",
            RawTable::SurveyResponses => "responded_at",
            RawTable::Consents => "recorded_at",
            _ => self
                .declaration()
                .map_or(declared::LOADED_AT, |d| d.time_column()),
        }
    }

    /// The Arrow schema of the files (without the `date` column), ending
    /// with [`EXTRA_COLUMN`].
    pub fn file_schema(self) -> SchemaRef {
        let mut fields = match self {
            RawTable::Events => vec![
                text("message_id", false),
                text("type", false),
                text("event", true),
                text("name", true),
                text("anonymous_id", true),
                text("user_id", true),
                text("previous_id", true),
                text("group_id", true),
                text("email", true),
                timestamp("timestamp", false),
                timestamp("received_at", false),
                text("properties", true),
                text("traits", true),
                text("context", true),
            ],
            RawTable::Customers => vec![
                text("customer_id", false),
                text("email", true),
                text("phone", true),
                text("first_name", true),
                text("last_name", true),
                text("street", true),
                text("city", true),
                text("postal_code", true),
                text("country", true),
                Field::new("birth_date", DataType::Date32, true),
                text("loyalty_tier", true),
                Field::new("newsletter", DataType::Boolean, true),
                text("source", false),
                timestamp("created_at", true),
                timestamp("updated_at", false),
            ],
            RawTable::Orders => vec![
                text("order_id", false),
                text("customer_id", true),
                text("email", true),
                text("anonymous_id", true),
                timestamp("ordered_at", false),
                money("amount", false),
                text("currency", false),
                text("status", false),
                text("channel", false),
                Field::new("item_count", DataType::Int64, false),
            ],
            RawTable::OrderItems => vec![
                text("order_id", false),
                Field::new("line", DataType::Int64, false),
                text("product_id", false),
                Field::new("quantity", DataType::Int64, false),
                money("unit_price", false),
                timestamp("ordered_at", false),
            ],
            RawTable::Products => vec![
                text("product_id", false),
                text("name", false),
                text("category", false),
                money("price", false),
                Field::new("stock", DataType::Int64, false),
                text("season", true),
                Field::new("active", DataType::Boolean, false),
                timestamp("updated_at", false),
            ],
            RawTable::SurveyResponses => vec![
                text("response_id", false),
                text("customer_id", true),
                text("email", true),
                text("anonymous_id", true),
                text("survey", false),
                Field::new("score", DataType::Int64, false),
                text("comment", true),
                text("channel", true),
                timestamp("responded_at", false),
            ],
            RawTable::Consents => vec![
                text("consent_id", false),
                text("customer_id", true),
                text("email", true),
                text("anonymous_id", true),
                text("purpose", false),
                text("status", false),
                timestamp("recorded_at", false),
                text("source", false),
            ],
            _ => {
                return self
                    .declaration()
                    .map(declared::Declaration::file_schema)
                    .unwrap_or_else(|| Arc::new(Schema::new(vec![text(EXTRA_COLUMN, true)])));
            }
        };
        fields.push(text(EXTRA_COLUMN, true));
        Arc::new(Schema::new(fields))
    }

    /// The schema of the table as a Delta table: its file columns, then
    /// [`DAY_COLUMN`].
    pub fn delta_schema(self) -> SchemaRef {
        let schema = self.file_schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(DAY_COLUMN, DataType::Date32, false));
        Arc::new(Schema::new(fields))
    }

    /// `batch` with the columns of [`RawTable::file_schema`]: rows written
    /// before a column existed (the bundled sample, a lake from an older
    /// release) get it as NULL; a column the table lacks, or of another
    /// type, is an error naming it.
    pub fn conform(self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let schema = self.file_schema();
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            match batch.column_by_name(field.name()) {
                Some(column) => columns.push(Arc::clone(column)),
                None if field.is_nullable() => {
                    columns.push(new_null_array(field.data_type(), batch.num_rows()))
                }
                None => {
                    return Err(ArrowError::SchemaError(format!(
                        "raw.{self} rows lack the column {}",
                        field.name()
                    )));
                }
            }
        }
        if let Some(unknown) = batch
            .schema()
            .fields()
            .iter()
            .find(|f| schema.field_with_name(f.name()).is_err())
        {
            return Err(ArrowError::SchemaError(format!(
                "raw.{self} has no column {}",
                unknown.name()
            )));
        }
        RecordBatch::try_new(schema, columns)
    }
}

impl std::fmt::Display for RawTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The Arrow type of every timestamp column: `timestamptz` in PostgreSQL.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow type of every money column: `numeric(12,2)` in PostgreSQL.
/// A column of UTC microsecond timestamps (the type of every time Panorama
/// writes).
pub fn utc_timestamps(values: impl IntoIterator<Item = i64>) -> datafusion::arrow::array::ArrayRef {
    Arc::new(
        datafusion::arrow::array::TimestampMicrosecondArray::from_iter_values(values)
            .with_timezone("UTC"),
    )
}

pub fn money_type() -> DataType {
    DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE)
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn timestamp(name: &str, nullable: bool) -> Field {
    Field::new(name, timestamp_type(), nullable)
}

fn money(name: &str, nullable: bool) -> Field {
    Field::new(name, money_type(), nullable)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sql/schema.sql` documents every column of every table, in order.
    #[test]
    fn schema_sql_documents_every_column() {
        let doc = include_str!("../sql/schema.sql");
        for table in RawTable::ALL {
            let header = format!("CREATE TABLE raw.{} (", table.name());
            let start = doc
                .find(&header)
                .unwrap_or_else(|| panic!("sql/schema.sql lacks {header}"));
            let body = &doc[start + header.len()..];
            let body = &body[..body.find(");").expect("unterminated CREATE TABLE")];
            let documented: Vec<&str> = body
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("--"))
                .map(|l| l.split_whitespace().next().unwrap_or_default())
                .collect();
            let mut expected: Vec<String> = table
                .file_schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            expected.push(DAY_COLUMN.to_string());
            assert_eq!(documented, expected, "columns of raw.{table}");
        }
    }

    #[test]
    fn names_round_trip() {
        for table in RawTable::ALL {
            assert_eq!(RawTable::from_name(table.name()), Some(table));
        }
        assert_eq!(RawTable::from_name("nope"), None);
    }
}

/// Schemas of the materialised `cdp` views and the `system` tables.
pub mod cdp {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

    use super::timestamp_type;

    fn text(name: &str) -> Field {
        Field::new(name, DataType::Utf8, true)
    }
    fn ts(name: &str) -> Field {
        Field::new(name, timestamp_type(), true)
    }
    fn int(name: &str) -> Field {
        Field::new(name, DataType::Int64, true)
    }
    fn money(name: &str) -> Field {
        Field::new(name, DataType::Decimal128(18, 2), true)
    }

    /// `system.rejects`: rows a load could not use.
    pub fn rejects() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("load_id", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("line", DataType::Int64, false),
            Field::new("field", DataType::Utf8, true),
            Field::new("reason", DataType::Utf8, false),
            Field::new("raw", DataType::Utf8, true),
            Field::new(
                "rejected_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]))
    }

    /// `system.ingests`: one row per file loaded.
    pub fn ingests() -> SchemaRef {
        let ts = |n: &str| {
            Field::new(
                n,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            )
        };
        Arc::new(Schema::new(vec![
            Field::new("load_id", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("content_hash", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("rows_read", DataType::Int64, false),
            Field::new("rows_landed", DataType::Int64, false),
            Field::new("rows_rejected", DataType::Int64, false),
            ts("started_at"),
            ts("finished_at"),
            // Names of the file fields kept in `extra` / left out on request,
            // comma-separated (NULL: none).
            Field::new("fields_in_extra", DataType::Utf8, true),
            Field::new("fields_dropped", DataType::Utf8, true),
            // Rows not landed: they carry a suppressed identifier.
            Field::new("rows_suppressed", DataType::Int64, true),
        ]))
    }

    /// `cdp.identity_links`: one row per known identifier.
    pub fn identity_links() -> SchemaRef {
        Arc::new(Schema::new(vec![
            text("id_type"),
            text("id_value"),
            text("profile_id"),
            ts("first_seen"),
            ts("last_seen"),
        ]))
    }

    /// `cdp.profile_merges`: the history of merges and splits.
    pub fn profile_merges() -> SchemaRef {
        Arc::new(Schema::new(vec![
            text("kind"),
            text("from_profile_id"),
            text("to_profile_id"),
            text("cause_type"),
            text("cause_value"),
            ts("refreshed_at"),
        ]))
    }

    /// `cdp.identity_rejections`: values and links the rules refused.
    pub fn identity_rejections() -> SchemaRef {
        Arc::new(Schema::new(vec![
            text("kind"),
            text("id_type"),
            text("id_value"),
            text("other_type"),
            text("other_value"),
            text("detail"),
            ts("refreshed_at"),
        ]))
    }

    /// The list column of one identifier type in `cdp.profiles`.
    pub fn list_column(id_type: &str) -> String {
        format!("{id_type}s")
    }

    /// `cdp.profiles`: one row per person, for the configured identifier
    /// types and consent purposes.
    pub fn profiles(id_types: &[String], purposes: &[String]) -> SchemaRef {
        let mut fields = vec![Field::new("profile_id", DataType::Utf8, false)];
        for t in id_types {
            fields.push(Field::new(
                list_column(t),
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ));
        }
        fields.extend([
            text("first_name"),
            text("last_name"),
            text("street"),
            text("city"),
            text("postal_code"),
            text("country"),
            Field::new("birth_date", DataType::Date32, true),
            text("loyalty_tier"),
            Field::new("newsletter", DataType::Boolean, true),
            ts("first_seen"),
            ts("last_seen"),
            int("events"),
            int("page_views"),
            int("tracks"),
            int("identifies"),
            int("orders"),
            int("net_orders"),
            money("gross_revenue"),
            money("net_revenue"),
            money("avg_order_value"),
            ts("first_order_at"),
            ts("last_order_at"),
            ts("last_net_order_at"),
            text("preferred_channel"),
            int("last_nps"),
            ts("last_nps_at"),
            int("last_csat"),
            ts("last_csat_at"),
            int("last_ces"),
            ts("last_ces_at"),
        ]);
        fields.extend(purposes.iter().map(|p| text(&format!("consent_{p}"))));
        fields.push(ts("refreshed_at"));
        Arc::new(Schema::new(fields))
    }

    /// `system.identity_blocks`: administrators' blocks and unblocks.
    pub fn identity_blocks() -> SchemaRef {
        Arc::new(Schema::new(vec![
            text("action"),
            text("id_type"),
            text("id_value"),
            text("other_type"),
            text("other_value"),
            text("reason"),
            ts("decided_at"),
        ]))
    }

    /// `system.privacy_requests`: one row per identifier of a privacy
    /// request and state it reached (`started`, then `completed` or
    /// `failed`); the value only as a salted hash.
    pub fn privacy_requests() -> SchemaRef {
        Arc::new(Schema::new(vec![
            text("request_id"),
            text("kind"),
            text("id_type"),
            text("value_hash"),
            text("status"),
            ts("requested_at"),
            ts("due_at"),
            ts("completed_at"),
            int("identifiers"),
            int("profiles"),
            int("rows_removed"),
            int("files_rewritten"),
            // JSON: table → rows removed from it.
            text("tables"),
            text("error"),
        ]))
    }

    /// `system.suppressions`: one row per identifier suppressed or lifted
    /// (`action`), as a salted hash.
    pub fn suppressions() -> SchemaRef {
        Arc::new(Schema::new(vec![
            text("request_id"),
            text("action"),
            text("id_type"),
            text("value_hash"),
            ts("decided_at"),
        ]))
    }

    /// `analytics.segment_membership`: who was in each saved segment at
    /// each snapshot.
    pub fn segment_membership() -> SchemaRef {
        Arc::new(Schema::new(vec![
            text("segment"),
            text("profile_id"),
            ts("snapshot_at"),
        ]))
    }

    /// `system.job_runs`: one row per run of a scheduled job.
    pub fn job_runs() -> SchemaRef {
        Arc::new(Schema::new(vec![
            text("job"),
            ts("scheduled_for"),
            ts("started_at"),
            ts("finished_at"),
            text("status"),
            int("rows_written"),
            text("error"),
            text("target"),
            int("version"),
            int("rows_left_out"),
        ]))
    }

    /// `system.refreshes`: one row per refresh, successful or not.
    /// `system.table_history`: the commits of every raw table.
    pub fn table_history() -> SchemaRef {
        Arc::new(Schema::new(vec![
            text("table_name"),
            int("version"),
            ts("committed_at"),
            text("operation"),
            text("written_by"),
            int("files_added"),
            int("files_removed"),
            int("rows_added"),
            Field::new("data_change", DataType::Boolean, true),
        ]))
    }

    pub fn refreshes() -> SchemaRef {
        Arc::new(Schema::new(vec![
            text("refresh_id"),
            ts("started_at"),
            ts("finished_at"),
            text("status"),
            text("error"),
            Field::new("full", DataType::Boolean, true),
            int("version"),
            int("raw_files"),
            int("raw_rows"),
            int("identifiers"),
            int("links"),
            int("profiles"),
            int("new_profiles"),
            int("merges"),
            int("splits"),
            int("refused_links"),
            int("blocked_values"),
            // JSON: identifier values each source's rule refused, by
            // source (`{"raw.customers.phone (phone)": 12}`); NULL: none.
            Field::new("refused_values", DataType::Utf8, true),
        ]))
    }
}
