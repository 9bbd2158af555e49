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
//! with the functions of [`super::functions`] that clients call.
//!
//! Each corrected table is read from the original (the catalogs are small)
//! and patched in memory, so OIDs stay those the rest of `pg_catalog`
//! hands out.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, ListArray, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Int16Type, Int32Type, Schema, SchemaRef, TimeUnit,
};
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
    for udf in super::functions::functions() {
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
        let mut names = self.inner.table_names();
        names.extend(EXTRA_TABLES.iter().map(|t| t.to_string()));
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else {
            return Ok(Extra::named(name).map(|extra| {
                Arc::new(ExtraTable {
                    extra,
                    schema: extra.schema(),
                    inner: Arc::clone(&self.inner),
                }) as Arc<dyn TableProvider>
            }));
        };
        let fix = match name.to_ascii_lowercase().as_str() {
            "pg_attribute" => Fix::Attributes,
            "pg_namespace" => Fix::Namespaces,
            "pg_settings" => Fix::Settings,
            "pg_type" => Fix::Types,
            "pg_constraint" => Fix::Constraints,
            "pg_index" => Fix::Indexes,
            "pg_class" => Fix::Classes,
            "pg_stat_gssapi" => Fix::Gssapi,
            _ if normalized(&table.schema()) != table.schema() => Fix::Plain,
            _ if postgres_columns(name).is_some() => Fix::Plain,
            _ => return Ok(Some(table)),
        };
        let fix_schema = fix.schema(&table.schema());
        let patched_schema = in_postgres_order(name, normalized(&fix_schema));
        Ok(Some(Arc::new(Patched {
            table,
            fix,
            fix_schema,
            patched_schema,
            schema: Arc::clone(&self.inner),
            catalogs: Arc::clone(&self.catalogs),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name) || Extra::named(name).is_some()
    }
}

/// The `pg_catalog` relations Panorama adds (see [`Extra`]).
pub const EXTRA_TABLES: &[&str] = &[
    "pg_locks",
    "pg_stat_ssl",
    "pg_timezone_abbrevs",
    "pg_timezone_names",
    "pg_user",
];

/// A `pg_catalog` view `datafusion-pg-catalog` lacks and clients read:
/// `pg_locks` (DataGrip's transaction probe; no locks here), `pg_stat_ssl`
/// (DataGrip; the connection's row, without TLS details), `pg_user`
/// (pgAdmin's recovery probe; the login roles of `pg_roles`) and
/// `pg_timezone_names` / `pg_timezone_abbrevs` (DataGrip's time zone list;
/// the zones of the system's tz database).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    Locks,
    StatSsl,
    TimezoneAbbrevs,
    TimezoneNames,
    User,
}

fn oid_column(name: &str) -> Field {
    Field::new(name, DataType::Int32, true).with_metadata(HashMap::from([(
        datafusion_postgres::arrow_pg::datatypes::PG_OID_ALIAS_KEY.to_string(),
        "oid".to_string(),
    )]))
}

fn timestamptz() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl Extra {
    fn named(name: &str) -> Option<Extra> {
        Some(match name.to_ascii_lowercase().as_str() {
            "pg_locks" => Extra::Locks,
            "pg_stat_ssl" => Extra::StatSsl,
            "pg_timezone_abbrevs" => Extra::TimezoneAbbrevs,
            "pg_timezone_names" => Extra::TimezoneNames,
            "pg_user" => Extra::User,
            _ => return None,
        })
    }

    /// PostgreSQL 15's columns (`xid` as `int8`, which Arrow can carry).
    fn schema(self) -> SchemaRef {
        let text = |n: &str| Field::new(n, DataType::Utf8, true);
        let boolean = |n: &str| Field::new(n, DataType::Boolean, true);
        let int4 = |n: &str| Field::new(n, DataType::Int32, true);
        let int2 = |n: &str| Field::new(n, DataType::Int16, true);
        let interval = |n: &str| {
            Field::new(
                n,
                DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
                true,
            )
        };
        let fields = match self {
            Extra::Locks => vec![
                text("locktype"),
                oid_column("database"),
                oid_column("relation"),
                int4("page"),
                int2("tuple"),
                text("virtualxid"),
                Field::new("transactionid", DataType::Int64, true),
                oid_column("classid"),
                oid_column("objid"),
                int2("objsubid"),
                text("virtualtransaction"),
                int4("pid"),
                text("mode"),
                boolean("granted"),
                boolean("fastpath"),
                Field::new("waitstart", timestamptz(), true),
            ],
            Extra::StatSsl => vec![
                int4("pid"),
                boolean("ssl"),
                text("version"),
                text("cipher"),
                int4("bits"),
                text("client_dn"),
                Field::new("client_serial", DataType::Decimal128(38, 0), true),
                text("issuer_dn"),
            ],
            Extra::TimezoneAbbrevs => {
                vec![text("abbrev"), interval("utc_offset"), boolean("is_dst")]
            }
            Extra::TimezoneNames => vec![
                text("name"),
                text("abbrev"),
                interval("utc_offset"),
                boolean("is_dst"),
            ],
            Extra::User => vec![
                text("usename"),
                oid_column("usesysid"),
                boolean("usecreatedb"),
                boolean("usesuper"),
                boolean("userepl"),
                boolean("usebypassrls"),
                text("passwd"),
                Field::new("valuntil", timestamptz(), true),
                Field::new("useconfig", DataType::new_list(DataType::Utf8, true), true),
            ],
        };
        Arc::new(Schema::new(fields))
    }
}

#[derive(Debug)]
struct ExtraTable {
    extra: Extra,
    schema: SchemaRef,
    /// The original `pg_catalog` (`pg_user` reads `pg_roles`).
    inner: Arc<dyn SchemaProvider>,
}

impl ExtraTable {
    async fn rows(&self, state: &dyn Session) -> Result<RecordBatch> {
        let schema = Arc::clone(&self.schema);
        match self.extra {
            Extra::Locks => Ok(RecordBatch::new_empty(schema)),
            Extra::StatSsl => {
                let pid = crate::functions::session::backend_pid();
                let columns = schema
                    .fields()
                    .iter()
                    .map(|f| -> ArrayRef {
                        match f.name().as_str() {
                            "pid" => Arc::new(Int32Array::from(vec![pid])),
                            "ssl" => Arc::new(BooleanArray::from(vec![false])),
                            _ => datafusion::arrow::array::new_null_array(f.data_type(), 1),
                        }
                    })
                    .collect();
                Ok(RecordBatch::try_new(schema, columns)?)
            }
            Extra::TimezoneNames | Extra::TimezoneAbbrevs => {
                timezones(schema, self.extra == Extra::TimezoneNames)
            }
            Extra::User => {
                let roles = read_named(self.inner.as_ref(), "pg_roles", state).await?;
                let mut out = Vec::new();
                for b in &roles {
                    let login = column(b, "rolcanlogin")?.as_boolean();
                    let keep = BooleanArray::from(
                        (0..b.num_rows())
                            .map(|i| login.is_valid(i) && login.value(i))
                            .collect::<Vec<_>>(),
                    );
                    let b = datafusion::arrow::compute::filter_record_batch(b, &keep)?;
                    let from = |role_column: &str, to: &Field| -> Result<ArrayRef> {
                        Ok(datafusion::arrow::compute::cast(
                            column(&b, role_column)?,
                            to.data_type(),
                        )?)
                    };
                    let columns =
                        schema
                            .fields()
                            .iter()
                            .map(|f| match f.name().as_str() {
                                "usename" => from("rolname", f),
                                "usesysid" => from("oid", f),
                                "usecreatedb" => from("rolcreatedb", f),
                                "usesuper" => from("rolsuper", f),
                                "userepl" => from("rolreplication", f),
                                "usebypassrls" => from("rolbypassrls", f),
                                "passwd" => Ok(Arc::new(StringArray::from(vec![
                                    Some("********");
                                    b.num_rows()
                                ])) as ArrayRef),
                                "valuntil" => from("rolvaliduntil", f),
                                _ => Ok(datafusion::arrow::array::new_null_array(
                                    f.data_type(),
                                    b.num_rows(),
                                )),
                            })
                            .collect::<Result<Vec<_>>>()?;
                    out.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
                }
                let mut users = datafusion::arrow::compute::concat_batches(&schema, &out)?;
                // The connection's own user logs in, whatever roles say.
                let user = crate::functions::session::user();
                let names = strings(&users, "usename")?;
                if !names.iter().any(|n| n == Some(user.as_str())) {
                    let columns = schema
                        .fields()
                        .iter()
                        .map(|f| -> ArrayRef {
                            match f.name().as_str() {
                                "usename" => Arc::new(StringArray::from(vec![user.clone()])),
                                "usesysid" => Arc::new(Int32Array::from(vec![10])),
                                "usecreatedb" | "usesuper" | "userepl" | "usebypassrls" => {
                                    Arc::new(BooleanArray::from(vec![false]))
                                }
                                "passwd" => Arc::new(StringArray::from(vec!["********"])),
                                _ => datafusion::arrow::array::new_null_array(f.data_type(), 1),
                            }
                        })
                        .collect();
                    let row = RecordBatch::try_new(Arc::clone(&schema), columns)?;
                    users = datafusion::arrow::compute::concat_batches(&schema, &[users, row])?;
                }
                Ok(users)
            }
        }
    }
}

/// The zones of the system's tz database (`tzdata.zi`: zones and links),
/// at their offset now; `UTC` alone where there is none. `abbrevs` lists
/// each offset once, named as `+01` (Arrow's time zones keep no
/// abbreviations).
fn timezones(schema: SchemaRef, names: bool) -> Result<RecordBatch> {
    use chrono::{Offset, TimeZone};
    use datafusion::arrow::array::IntervalMonthDayNanoArray;
    use datafusion::arrow::datatypes::IntervalMonthDayNano;
    let listed = std::fs::read_to_string("/usr/share/zoneinfo/tzdata.zi").unwrap_or_default();
    let mut zones: Vec<&str> = listed
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["Z", name, ..] => Some(name),
                ["L", _, name, ..] => Some(name),
                _ => None,
            },
        )
        .collect();
    zones.push("UTC");
    zones.sort_unstable();
    zones.dedup();
    let now = chrono::Utc::now().naive_utc();
    let mut rows: Vec<(String, i32)> = zones
        .into_iter()
        .filter_map(|name| {
            let tz: datafusion::arrow::array::timezone::Tz = name.parse().ok()?;
            let seconds = tz.offset_from_utc_datetime(&now).fix().local_minus_utc();
            Some((name.to_string(), seconds))
        })
        .collect();
    let abbrev = |seconds: i32| {
        let (sign, s) = if seconds < 0 {
            ('-', -seconds)
        } else {
            ('+', seconds)
        };
        match (s / 3600, s % 3600 / 60) {
            (h, 0) => format!("{sign}{h:02}"),
            (h, m) => format!("{sign}{h:02}{m:02}"),
        }
    };
    if !names {
        let mut offsets: Vec<i32> = rows.iter().map(|r| r.1).collect();
        offsets.sort_unstable();
        offsets.dedup();
        rows = offsets.into_iter().map(|o| (abbrev(o), o)).collect();
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                "name" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                "abbrev" if names => Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| abbrev(r.1)),
                )),
                "abbrev" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                "utc_offset" => Arc::new(IntervalMonthDayNanoArray::from_iter_values(
                    rows.iter()
                        .map(|r| IntervalMonthDayNano::new(0, 0, i64::from(r.1) * 1_000_000_000)),
                )),
                "is_dst" => Arc::new(BooleanArray::from(vec![false; rows.len()])),
                _ => datafusion::arrow::array::new_null_array(f.data_type(), rows.len()),
            }
        })
        .collect();
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[async_trait]
impl TableProvider for ExtraTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.rows(state).await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
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
    Gssapi,
    /// Only [`normalized`]'s changes.
    Plain,
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
            // datafusion-pg-catalog 0.19 spells `boot_val` `bool_val`.
            Fix::Settings => {
                let fields: Vec<Field> = schema
                    .fields()
                    .iter()
                    .map(|f| match f.name().as_str() {
                        "bool_val" => f.as_ref().clone().with_name("boot_val"),
                        _ => f.as_ref().clone(),
                    })
                    .collect();
                return Arc::new(Schema::new(fields));
            }
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

/// PostgreSQL's one-byte `"char"` columns that always hold a letter, which
/// `datafusion-pg-catalog` types `text`: marked so that `arrow-pg` announces
/// and encodes them as `"char"` (pgjdbc and Npgsql decode `relkind`,
/// `typtype`… by their type). Columns that may be empty (`attidentity`)
/// stay text: `arrow-pg` cannot encode an empty `"char"` in binary.
const CHAR_COLUMNS: &[&str] = &[
    "relkind",
    "relpersistence",
    "relreplident",
    "typtype",
    "typcategory",
    "typdelim",
    "typalign",
    "typstorage",
    "attalign",
    "attstorage",
];

/// Columns of type `oid` in PostgreSQL that `datafusion-pg-catalog` leaves
/// plain `Int32` (announced `int4`): marked `oid`. Columns it marks as an
/// alias (`regclass`, …) keep their mark, which its planner relies on.
const OID_COLUMNS: &[&str] = &[
    "oid",
    "datdba",
    "dattablespace",
    "nspowner",
    "spcowner",
    "relowner",
    "relam",
    "reltablespace",
    "relfilenode",
    "reltoastrelid",
    "attcollation",
    "typcollation",
    "roleid",
    "member",
    "grantor",
    "objoid",
    "classoid",
    "adrelid",
    "inhrelid",
    "inhparent",
];

/// The columns of PostgreSQL 16's `pg_database`, `pg_namespace` and
/// `pg_class`, in its order, where `datafusion-pg-catalog` has others or
/// another order:
/// `SELECT db.*` (DBeaver) must list what PostgreSQL lists. A column
/// missing from the original is NULL of the type given here.
fn postgres_columns(table: &str) -> Option<Vec<(&'static str, DataType)>> {
    let text = || DataType::Utf8;
    let acl = || DataType::new_list(DataType::Utf8, true);
    let keep = || DataType::Null;
    let names_types: Vec<(&str, DataType)> = match table.to_ascii_lowercase().as_str() {
        "pg_database" => vec![
            ("oid", keep()),
            ("datname", keep()),
            ("datdba", keep()),
            ("encoding", keep()),
            ("datlocprovider", keep()),
            ("datistemplate", keep()),
            ("datallowconn", keep()),
            ("datconnlimit", keep()),
            ("datfrozenxid", keep()),
            ("datminmxid", keep()),
            ("dattablespace", keep()),
            ("datcollate", keep()),
            ("datctype", keep()),
            ("daticulocale", text()),
            ("daticurules", text()),
            ("datcollversion", text()),
            ("datacl", acl()),
        ],
        // datafusion-pg-catalog adds `options`, which PostgreSQL lacks.
        "pg_namespace" => ["oid", "nspname", "nspowner", "nspacl"]
            .into_iter()
            .map(|n| (n, keep()))
            .collect(),
        "pg_class" => [
            "oid",
            "relname",
            "relnamespace",
            "reltype",
            "reloftype",
            "relowner",
            "relam",
            "relfilenode",
            "reltablespace",
            "relpages",
            "reltuples",
            "relallvisible",
            "reltoastrelid",
            "relhasindex",
            "relisshared",
            "relpersistence",
            "relkind",
            "relnatts",
            "relchecks",
            "relhasrules",
            "relhastriggers",
            "relhassubclass",
            "relrowsecurity",
            "relforcerowsecurity",
            "relispopulated",
            "relreplident",
            "relispartition",
            "relrewrite",
            "relfrozenxid",
            "relminmxid",
        ]
        .into_iter()
        .map(|n| (n, keep()))
        .chain([
            ("relacl", acl()),
            ("reloptions", acl()),
            ("relpartbound", text()),
        ])
        .collect(),
        _ => return None,
    };
    Some(names_types)
}

/// `schema` with [`postgres_columns`]'s columns, in their order: those of
/// `schema` as they are, the others added with the type given there.
fn in_postgres_order(table: &str, schema: SchemaRef) -> SchemaRef {
    let Some(columns) = postgres_columns(table) else {
        return schema;
    };
    let fields: Vec<Field> = columns
        .into_iter()
        .map(|(name, data_type)| match schema.field_with_name(name) {
            Ok(field) => field.clone(),
            Err(_) => Field::new(name, data_type, true),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The oid aliases PostgreSQL's catalogs type as plain `oid`
/// (`pg_class.reltype`, `pg_attribute.attrelid`, `atttypid`, …), which
/// `datafusion-pg-catalog` marks as `regtype`, `regclass`, …; the
/// `regproc` columns stay `regproc`, as in PostgreSQL.
const OID_NOT_ALIAS: &[&str] = &[
    "regclass",
    "regtype",
    "regnamespace",
    "regrole",
    "regcollation",
    "regconfig",
    "regdictionary",
];

/// Text array columns of PostgreSQL that `datafusion-pg-catalog` types
/// `text` and leaves NULL: `text[]`, NULL (as the ACL columns).
const TEXT_ARRAYS: &[&str] = &["attoptions", "attfdwoptions", "spcoptions", "enumvals"];

/// A catalog table's schema as PostgreSQL types it, where `arrow-pg` can
/// say so: `"char"` and `oid` columns marked, ACL columns (`datacl`,
/// `spcacl`, … — always NULL here) as `text[]`, not text in one table and
/// `int4[]` in another (DataGrip's `UNION ALL` of two ACL columns failed).
fn normalized(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let name = f.name().as_str();
            let mut field = f.as_ref().clone();
            let mut metadata = field.metadata().clone();
            if CHAR_COLUMNS.contains(&name) && f.data_type() == &DataType::Utf8 {
                metadata.insert(
                    datafusion_postgres::arrow_pg::datatypes::PG_CHAR_KEY.to_string(),
                    "char".to_string(),
                );
            }
            let alias_key = datafusion_postgres::arrow_pg::datatypes::PG_OID_ALIAS_KEY;
            if OID_COLUMNS.contains(&name)
                && f.data_type() == &DataType::Int32
                && !metadata.contains_key(alias_key)
            {
                metadata.insert(alias_key.to_string(), "oid".to_string());
            }
            if metadata
                .get(alias_key)
                .is_some_and(|kind| OID_NOT_ALIAS.contains(&kind.as_str()))
            {
                metadata.insert(alias_key.to_string(), "oid".to_string());
            }
            if (name.ends_with("acl") || TEXT_ARRAYS.contains(&name))
                && f.data_type() != &DataType::new_list(DataType::Utf8, true)
            {
                field = Field::new(name, DataType::new_list(DataType::Utf8, true), true);
            }
            field.with_metadata(metadata)
        })
        .collect();
    let normalized = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    if normalized == *schema {
        Arc::clone(schema)
    } else {
        normalized
    }
}

/// `batches` in `schema` (the same columns, as [`normalized`] marks and
/// types them), an empty `"char"` value made NULL.
fn in_schema(batches: Vec<RecordBatch>, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|b| {
            let columns = schema
                .fields()
                .iter()
                .map(|field| -> ArrayRef {
                    let Some(column) = b.column_by_name(field.name()) else {
                        // A column PostgreSQL has and the original lacks.
                        return datafusion::arrow::array::new_null_array(
                            field.data_type(),
                            b.num_rows(),
                        );
                    };
                    if column.data_type() != field.data_type() {
                        // An ACL column retyped: no ACLs here.
                        datafusion::arrow::array::new_null_array(field.data_type(), b.num_rows())
                    } else if datafusion_postgres::arrow_pg::datatypes::is_pg_char_field(field)
                        && let Some(text) = column.as_string_opt::<i32>()
                    {
                        Arc::new(
                            text.iter()
                                .map(|v| v.filter(|v| !v.is_empty()))
                                .collect::<StringArray>(),
                        )
                    } else {
                        Arc::clone(column)
                    }
                })
                .collect();
            Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
        })
        .collect()
}

/// A `pg_catalog` table read whole from the original and patched.
#[derive(Debug)]
struct Patched {
    table: Arc<dyn TableProvider>,
    fix: Fix,
    /// The schema the fix produces.
    fix_schema: SchemaRef,
    /// What the table announces: [`normalized`] `fix_schema`.
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
            Fix::Settings => settings(&self.fix_schema),
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
            Fix::Plain => Ok(batches),
            // The connection's own row: its pid is `pg_backend_pid()`'s.
            Fix::Gssapi => {
                let pid = crate::functions::session::backend_pid();
                batches
                    .iter()
                    .map(|b| {
                        replace(
                            b,
                            "pid",
                            Arc::new(Int32Array::from(vec![pid; b.num_rows()])),
                        )
                    })
                    .collect()
            }
            // `reloptions` (storage options; none here), which SQLAlchemy's
            // `get_indexes` reads.
            Fix::Classes => batches
                .iter()
                .map(|b| {
                    let mut columns = b.columns().to_vec();
                    for field in self.fix_schema.fields().iter().skip(columns.len()) {
                        columns.push(datafusion::arrow::array::new_null_array(
                            field.data_type(),
                            b.num_rows(),
                        ));
                    }
                    Ok(RecordBatch::try_new(Arc::clone(&self.fix_schema), columns)?)
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
                            let to = self.fix_schema.field(i).data_type().clone();
                            return Ok(datafusion::arrow::array::new_empty_array(&to));
                        }
                        Ok(datafusion::arrow::compute::concat(&parts)?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(RecordBatch::try_new(Arc::clone(&self.fix_schema), arrays)?)
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
    let rows = super::settings::fixed_settings();
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
        let batches = in_schema(self.patch(state).await?, &self.patched_schema)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema(),
            projection.cloned(),
        )?)
    }
}
