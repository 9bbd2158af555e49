//! Corrections to `datafusion-pg-catalog`'s `pg_catalog`, where its rows
//! differ from what PostgreSQL answers for the same tables and the
//! difference shows in a client (found by the golden tests against a real
//! PostgreSQL in `tests/clients.rs`):
//!
//! - `pg_attribute.atttypmod` of a `numeric(p,s)` column is PostgreSQL's
//!   `((p << 16) | s) + 4`, not -1, so `format_type` says `numeric(12,2)`
//!   and JDBC/ODBC report its precision and scale;
//! - a view's columns are never `attnotnull`, as in PostgreSQL;
//! - `pg_namespace` lists `information_schema` (DataFusion serves one);
//! - `pg_settings` has the settings `SHOW` answers (`max_index_keys`, which
//!   pgjdbc reads before `getImportedKeys`, among them);
//! - `pg_type`'s function columns (`typinput`, `typreceive`, …) are OIDs of
//!   `pg_proc` rows, as their type `regproc` is, not names: Npgsql joins
//!   `pg_proc.oid = typ.typreceive`, pgjdbc compares `typinput =
//!   'array_in'::regproc`;
//! - `pg_constraint.conkey` / `confkey` and `pg_index.indkey` /
//!   `indclass` / … are arrays, not text, so `con.confkey[pos.n]`
//!   (pgjdbc's `getImportedKeys`) and `unnest(indkey)` (SQLAlchemy's
//!   `get_pk_constraint`) plan; `pg_class` has `reloptions` (NULL).
//!
//! with the functions of [`super::pg_functions`] that clients call.
//!
//! Each corrected table is read from the original (the catalogs are small)
//! and patched in memory, so OIDs stay those the rest of `pg_catalog`
//! hands out.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Int32Array, ListArray, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int16Type, Int32Type, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;

/// Wrap `catalog`'s `pg_catalog` schema; register the catalog functions.
pub fn install(ctx: &SessionContext, catalog: &str) -> Result<()> {
    let catalogs = ctx.state().catalog_list().clone();
    let provider = ctx
        .catalog(catalog)
        .ok_or_else(|| DataFusionError::Configuration(format!("no catalog {catalog}")))?;
    let inner = provider
        .schema("pg_catalog")
        .ok_or_else(|| DataFusionError::Configuration("pg_catalog must be set up first".into()))?;
    provider.register_schema("pg_catalog", Arc::new(Overlay { inner, catalogs }))?;
    for udf in super::pg_functions::functions() {
        ctx.register_udf(udf);
    }
    Ok(())
}

#[derive(Debug)]
struct Overlay {
    inner: Arc<dyn SchemaProvider>,
    catalogs: Arc<dyn CatalogProviderList>,
}

#[async_trait]
impl SchemaProvider for Overlay {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let fix = match name.to_ascii_lowercase().as_str() {
            "pg_attribute" => Fix::Attributes,
            "pg_namespace" => Fix::Namespaces,
            "pg_settings" => Fix::Settings,
            "pg_type" => Fix::Types,
            "pg_constraint" => Fix::Constraints,
            "pg_index" => Fix::Indexes,
            "pg_class" => Fix::Classes,
            _ => return Ok(Some(table)),
        };
        let patched_schema = fix.schema(&table.schema());
        Ok(Some(Arc::new(Patched {
            table,
            fix,
            patched_schema,
            schema: Arc::clone(&self.inner),
            catalogs: Arc::clone(&self.catalogs),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

#[derive(Debug, Clone, Copy)]
enum Fix {
    Attributes,
    Namespaces,
    Settings,
    Types,
    Constraints,
    Indexes,
    Classes,
}

/// `pg_type`'s `regproc` columns.
const TYPE_FUNCTIONS: &[&str] = &[
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
    "typsubscript",
];
/// `pg_constraint`'s `int2[]` columns.
const CONSTRAINT_KEYS: &[&str] = &["conkey", "confkey"];
/// `pg_index`'s `int2vector` / `oidvector` columns.
const INDEX_KEYS: &[&str] = &["indkey", "indcollation", "indclass", "indoption"];

impl Fix {
    /// The patched table's schema: some text columns get their real type.
    fn schema(self, schema: &SchemaRef) -> SchemaRef {
        let (columns, to): (&[&str], DataType) = match self {
            Fix::Types => (TYPE_FUNCTIONS, DataType::Int32),
            Fix::Constraints => (CONSTRAINT_KEYS, DataType::new_list(DataType::Int16, true)),
            Fix::Indexes => (INDEX_KEYS, DataType::new_list(DataType::Int32, true)),
            Fix::Classes if schema.field_with_name("reloptions").is_err() => {
                let mut fields: Vec<Field> =
                    schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                fields.push(Field::new(
                    "reloptions",
                    DataType::new_list(DataType::Utf8, true),
                    true,
                ));
                return Arc::new(Schema::new(fields));
            }
            _ => return Arc::clone(schema),
        };
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| {
                if columns.contains(&f.name().as_str()) {
                    Field::new(f.name(), to.clone(), true)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        Arc::new(Schema::new(fields))
    }
}

/// A `pg_catalog` table read whole from the original and patched.
#[derive(Debug)]
struct Patched {
    table: Arc<dyn TableProvider>,
    fix: Fix,
    patched_schema: SchemaRef,
    /// The original `pg_catalog`, for the tables a patch looks up.
    schema: Arc<dyn SchemaProvider>,
    catalogs: Arc<dyn CatalogProviderList>,
}

async fn read(table: &dyn TableProvider, state: &dyn Session) -> Result<Vec<RecordBatch>> {
    let plan = table.scan(state, None, &[], None).await?;
    collect(plan, state.task_ctx()).await
}

async fn read_named(
    schema: &dyn SchemaProvider,
    name: &str,
    state: &dyn Session,
) -> Result<Vec<RecordBatch>> {
    let table = schema
        .table(name)
        .await?
        .ok_or_else(|| DataFusionError::Plan(format!("pg_catalog.{name} is missing")))?;
    read(table.as_ref(), state).await
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog lacks column {name}")))
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    column(batch, name)?
        .as_string_opt::<i32>()
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog column {name} is not text")))
}

fn int32s<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int32Array> {
    column(batch, name)?
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog column {name} is not int4")))
}

/// `batch` with column `name` replaced by `values`.
fn replace(batch: &RecordBatch, name: &str, values: ArrayRef) -> Result<RecordBatch> {
    let index = batch.schema().index_of(name)?;
    let mut columns = batch.columns().to_vec();
    columns[index] = values;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

const NUMERIC_OID: i32 = 1700;
/// PostgreSQL's `information_schema` has an OID below the first user OID
/// (16384), where `datafusion-pg-catalog` starts counting.
const INFORMATION_SCHEMA_OID: i32 = 13_000;

impl Patched {
    async fn patch(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let batches = read(self.table.as_ref(), state).await?;
        match self.fix {
            Fix::Attributes => self.attributes(batches, state).await,
            Fix::Namespaces => namespaces(batches),
            Fix::Settings => settings(&self.table.schema()),
            Fix::Types => {
                let mut procs: HashMap<String, i32> = HashMap::new();
                for b in read_named(self.schema.as_ref(), "pg_proc", state).await? {
                    let (oids, names) = (int32s(&b, "oid")?, strings(&b, "proname")?);
                    for i in 0..b.num_rows() {
                        procs
                            .entry(names.value(i).to_string())
                            .and_modify(|o| *o = (*o).min(oids.value(i)))
                            .or_insert(oids.value(i));
                    }
                }
                self.retyped(batches, TYPE_FUNCTIONS, |text| {
                    let oid = procs.get(text.unwrap_or("-")).copied().unwrap_or(0);
                    Ok(Arc::new(Int32Array::from(vec![oid])) as ArrayRef)
                })
            }
            Fix::Constraints => self.retyped(batches, CONSTRAINT_KEYS, |text| {
                number_list::<Int16Type>(text)
            }),
            Fix::Indexes => self.retyped(batches, INDEX_KEYS, number_list::<Int32Type>),
            // `reloptions` (storage options; none here), which SQLAlchemy's
            // `get_indexes` reads.
            Fix::Classes => batches
                .iter()
                .map(|b| {
                    let mut columns = b.columns().to_vec();
                    for field in self.patched_schema.fields().iter().skip(columns.len()) {
                        columns.push(datafusion::arrow::array::new_null_array(
                            field.data_type(),
                            b.num_rows(),
                        ));
                    }
                    Ok(RecordBatch::try_new(
                        Arc::clone(&self.patched_schema),
                        columns,
                    )?)
                })
                .collect(),
        }
    }

    /// `batches` in the patched schema, each text value of `columns`
    /// turned into a one-row array by `convert`.
    fn retyped(
        &self,
        batches: Vec<RecordBatch>,
        columns: &[&str],
        convert: impl Fn(Option<&str>) -> Result<ArrayRef>,
    ) -> Result<Vec<RecordBatch>> {
        batches
            .iter()
            .map(|batch| {
                let arrays = batch
                    .schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, field)| -> Result<ArrayRef> {
                        if !columns.contains(&field.name().as_str()) {
                            return Ok(Arc::clone(batch.column(i)));
                        }
                        let text = strings(batch, field.name())?;
                        let parts = text.iter().map(&convert).collect::<Result<Vec<_>>>()?;
                        let parts: Vec<&dyn datafusion::arrow::array::Array> =
                            parts.iter().map(|a| a.as_ref()).collect();
                        if parts.is_empty() {
                            let to = self.patched_schema.field(i).data_type().clone();
                            return Ok(datafusion::arrow::array::new_empty_array(&to));
                        }
                        Ok(datafusion::arrow::compute::concat(&parts)?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(RecordBatch::try_new(
                    Arc::clone(&self.patched_schema),
                    arrays,
                )?)
            })
            .collect()
    }

    /// Numeric precision and scale, and nullable view columns.
    async fn attributes(
        &self,
        batches: Vec<RecordBatch>,
        state: &dyn Session,
    ) -> Result<Vec<RecordBatch>> {
        // oid -> (schema, table, relkind), from the same OIDs.
        let mut namespaces = HashMap::new();
        for b in read_named(self.schema.as_ref(), "pg_namespace", state).await? {
            let (oids, names) = (int32s(&b, "oid")?, strings(&b, "nspname")?);
            for i in 0..b.num_rows() {
                namespaces.insert(oids.value(i), names.value(i).to_string());
            }
        }
        let mut relations = HashMap::new();
        for b in read_named(self.schema.as_ref(), "pg_class", state).await? {
            let oids = int32s(&b, "oid")?;
            let names = strings(&b, "relname")?;
            let spaces = int32s(&b, "relnamespace")?;
            let kinds = strings(&b, "relkind")?;
            for i in 0..b.num_rows() {
                let Some(schema) = namespaces.get(&spaces.value(i)) else {
                    continue;
                };
                relations.insert(
                    oids.value(i),
                    (
                        schema.clone(),
                        names.value(i).to_string(),
                        kinds.value(i) == "v",
                    ),
                );
            }
        }
        let mut out = Vec::with_capacity(batches.len());
        for batch in batches {
            let relids = int32s(&batch, "attrelid")?;
            let names = strings(&batch, "attname")?;
            let types = int32s(&batch, "atttypid")?;
            let typmods = int32s(&batch, "atttypmod")?;
            let notnull = column(&batch, "attnotnull")?.as_boolean();
            let mut new_typmods = Vec::with_capacity(batch.num_rows());
            let mut new_notnull = Vec::with_capacity(batch.num_rows());
            for i in 0..batch.num_rows() {
                let relation = relations.get(&relids.value(i));
                let is_view = relation.is_some_and(|(_, _, view)| *view);
                new_notnull.push(notnull.value(i) && !is_view);
                let mut typmod = typmods.value(i);
                if types.value(i) == NUMERIC_OID
                    && let Some((schema, table, _)) = relation
                    && let Some(DataType::Decimal128(p, s) | DataType::Decimal256(p, s)) =
                        self.field_type(schema, table, names.value(i)).await?
                {
                    typmod = ((i32::from(p) << 16) | i32::from(s as u8)) + 4;
                }
                new_typmods.push(typmod);
            }
            let batch = replace(&batch, "atttypmod", Arc::new(Int32Array::from(new_typmods)))?;
            let batch = replace(
                &batch,
                "attnotnull",
                Arc::new(BooleanArray::from(new_notnull)),
            )?;
            out.push(batch);
        }
        Ok(out)
    }

    /// The Arrow type of `schema.table.column` in any catalog.
    async fn field_type(
        &self,
        schema: &str,
        table: &str,
        column: &str,
    ) -> Result<Option<DataType>> {
        for name in self.catalogs.catalog_names() {
            let Some(provider) = self.catalogs.catalog(&name).and_then(|c| c.schema(schema)) else {
                continue;
            };
            if let Some(t) = provider.table(table).await? {
                return Ok(t
                    .schema()
                    .field_with_name(column)
                    .ok()
                    .map(|f| f.data_type().clone()));
            }
        }
        Ok(None)
    }
}

/// A one-row list array of the numbers in `text` (`1 2`, `[1, 2]`, `{1,2}`).
fn number_list<T>(text: Option<&str>) -> Result<ArrayRef>
where
    T: datafusion::arrow::datatypes::ArrowPrimitiveType,
    T::Native: std::str::FromStr,
{
    let Some(text) = text else {
        return Ok(datafusion::arrow::array::new_null_array(
            &DataType::new_list(T::DATA_TYPE, true),
            1,
        ));
    };
    let numbers = text
        .trim_matches(|c| c == '[' || c == ']' || c == '{' || c == '}')
        .split([',', ' '])
        .filter(|k| !k.is_empty())
        .map(|k| k.parse::<T::Native>().map(Some))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| DataFusionError::Internal(format!("not a list of numbers: {text}")))?;
    Ok(Arc::new(ListArray::from_iter_primitive::<T, _, _>([Some(
        numbers,
    )])))
}

/// `pg_namespace` with `information_schema`.
fn namespaces(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let listed = batches.iter().try_fold(false, |seen, b| {
        Ok::<_, DataFusionError>(
            seen || strings(b, "nspname")?
                .iter()
                .any(|n| n == Some("information_schema")),
        )
    })?;
    let Some(first) = batches.first().filter(|_| !listed) else {
        return Ok(batches);
    };
    // One row shaped like the first one: its oid and name replaced, the
    // other columns (owner, ACL) copied.
    let row = first.slice(0, 1);
    let row = replace(
        &row,
        "oid",
        Arc::new(Int32Array::from(vec![INFORMATION_SCHEMA_OID])),
    )?;
    let row = replace(
        &row,
        "nspname",
        Arc::new(StringArray::from(vec!["information_schema"])),
    )?;
    let mut out = batches;
    out.push(row);
    Ok(out)
}

/// `pg_settings`: every setting `SHOW` knows, with its value.
fn settings(schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let rows = super::session::fixed_settings();
    let columns = schema
        .fields()
        .iter()
        .map(|field| -> ArrayRef {
            match field.name().as_str() {
                "name" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                "setting" | "reset_val" | "boot_val" => Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.1.as_str()),
                )),
                "source" => Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|_| "default"),
                )),
                _ => datafusion::arrow::array::new_null_array(field.data_type(), rows.len()),
            }
        })
        .collect();
    Ok(vec![RecordBatch::try_new(Arc::clone(schema), columns)?])
}

#[async_trait]
impl TableProvider for Patched {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.patched_schema)
    }

    fn table_type(&self) -> TableType {
        self.table.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = self.patch(state).await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema(),
            projection.cloned(),
        )?)
    }
}
