//! `CREATE TABLE raw.<name> (<column> <type> [NOT NULL], …) [WITH (time =
//! '<column>', personal = '<column>, …')]` from any SQL client: declares a
//! raw table of the user's own in the lake ([`crate::schema::declared`]),
//! at once ingestable (`panorama ingest <name>`), queryable and listed to
//! BI tools by every session; `ALTER TABLE raw.<name> ADD COLUMN <column>
//! <type>` widens one (older rows read NULL). Administrators only (the
//! analyst role is refused before this, as for any write). DataFusion
//! would make an in-memory table that vanishes at restart, hence this hook.

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    AlterTable, AlterTableOperation, ColumnDef, ColumnOption, CreateTable, CreateTableOptions,
    ObjectName, SqlOption, Statement,
};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::error::PgWireResult;

use super::statements::error;
use crate::catalog::CATALOG;
use crate::catalog::masking::MaskedSchema;
use crate::catalog::raw_schema::RawSchema;
use crate::schema::declared::{Column, Declaration};

/// The table name of `name` when it is `raw.<table>`.
pub(super) fn raw_table_name(name: &ObjectName) -> Option<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
        .collect();
    match parts.as_slice() {
        [schema, table] if schema.eq_ignore_ascii_case("raw") => Some(table.clone()),
        [catalog, schema, table]
            if catalog.eq_ignore_ascii_case(CATALOG) && schema.eq_ignore_ascii_case("raw") =>
        {
            Some(table.clone())
        }
        _ => None,
    }
}

/// Whether `statement` is one this module runs.
pub(super) fn handles(statement: &Statement) -> bool {
    match statement {
        Statement::CreateTable(create) => raw_table_name(&create.name).is_some(),
        Statement::AlterTable(alter) => raw_table_name(&alter.name).is_some(),
        _ => false,
    }
}

/// Run a statement [`handles`] said it runs.
pub(super) async fn run(ctx: &SessionContext, statement: &Statement) -> PgWireResult<Response> {
    match statement {
        Statement::CreateTable(create) => self::create(ctx, create).await,
        Statement::AlterTable(alter) => self::alter(ctx, alter).await,
        _ => Err(error("XX000", "not a raw table statement".into())),
    }
}

/// The lake of the session's `raw` schema.
fn lake_of(ctx: &SessionContext) -> PgWireResult<crate::lake::Lake> {
    let Some(schema) = ctx.catalog(CATALOG).and_then(|c| c.schema("raw")) else {
        return Err(error("XX000", "no raw schema".into()));
    };
    let schema = match schema.downcast_ref::<MaskedSchema>() {
        Some(masked) => std::sync::Arc::clone(masked.inner()),
        None => schema,
    };
    match schema.downcast_ref::<RawSchema>() {
        Some(raw) => Ok(raw.lake().clone()),
        None => Err(error("XX000", "the raw schema is not the lake's".into())),
    }
}

/// Run an `ALTER TABLE raw.<name> ADD COLUMN …` (nothing else).
async fn alter(ctx: &SessionContext, alter: &AlterTable) -> PgWireResult<Response> {
    let Some(name) = raw_table_name(&alter.name) else {
        return Err(error("42601", "not a raw table".into()));
    };
    let lake = lake_of(ctx)?;
    let Some(table) = lake.raw_table(&name) else {
        if alter.if_exists {
            return Ok(Response::Execution(Tag::new("ALTER TABLE")));
        }
        return Err(error(
            "42P01",
            format!("relation \"raw.{name}\" does not exist"),
        ));
    };
    let Some(before) = table.declaration() else {
        return Err(error(
            "0A000",
            format!(
                "raw.{name} is built in: its columns are fixed (fields it lacks are kept in its \
                 extra column)"
            ),
        ));
    };
    let mut columns = before.columns.clone();
    for operation in &alter.operations {
        let AlterTableOperation::AddColumn {
            column_def,
            if_not_exists,
            ..
        } = operation
        else {
            return Err(error(
                "0A000",
                format!("raw tables take ALTER TABLE … ADD COLUMN only, not {operation}"),
            ));
        };
        if columns.iter().any(|c| c.name == column_def.name.value) {
            if *if_not_exists {
                continue;
            }
            return Err(error(
                "42701",
                format!(
                    "column \"{}\" of relation \"raw.{name}\" already exists",
                    column_def.name.value
                ),
            ));
        }
        columns.push(column(column_def, false)?);
    }
    let declaration =
        Declaration::new(&name, columns, before.time.clone()).map_err(|e| error("42P16", e))?;
    lake.declare_table(&declaration)
        .await
        .map_err(|e| error("42P16", e.to_string()))?;
    tracing::info!("raw.{name}: widened over SQL");
    Ok(Response::Execution(Tag::new("ALTER TABLE")))
}

/// Run a `CREATE TABLE raw.<name> …`.
async fn create(ctx: &SessionContext, create: &CreateTable) -> PgWireResult<Response> {
    let Some(name) = raw_table_name(&create.name) else {
        return Err(error("42601", "not a raw table".into()));
    };
    let unsupported = |what: &str| {
        Err(error(
            "0A000",
            format!("raw tables take columns and WITH (time, personal) only, not {what}"),
        ))
    };
    if create.query.is_some() {
        return unsupported("AS SELECT (load rows with panorama ingest)");
    }
    if !create.constraints.is_empty() {
        return unsupported("constraints");
    }
    if create.like.is_some() || create.clone.is_some() {
        return unsupported("LIKE or CLONE");
    }
    if create.or_replace || create.temporary {
        return unsupported("OR REPLACE or TEMPORARY");
    }
    let (time, personal) = options(&create.table_options)?;
    let columns = create
        .columns
        .iter()
        .map(|def| column(def, personal.contains(&def.name.value)))
        .collect::<PgWireResult<Vec<_>>>()?;
    if let Some(unknown) = personal
        .iter()
        .find(|p| !columns.iter().any(|c| &c.name == *p))
    {
        return Err(error(
            "42703",
            format!("personal names {unknown}, which is not a column of raw.{name}"),
        ));
    }
    let declaration = Declaration::new(&name, columns, time).map_err(|e| error("42P16", e))?;
    let lake = lake_of(ctx)?;
    if lake.raw_table(&name).is_some() {
        if create.if_not_exists {
            return Ok(Response::Execution(Tag::new("CREATE TABLE")));
        }
        return Err(error(
            "42P07",
            format!(
                "relation \"raw.{name}\" already exists (add columns with ALTER TABLE raw.{name} \
                 ADD COLUMN)"
            ),
        ));
    }
    lake.declare_table(&declaration)
        .await
        .map_err(|e| error("42P16", e.to_string()))?;
    tracing::info!("raw.{name}: declared over SQL");
    Ok(Response::Execution(Tag::new("CREATE TABLE")))
}

/// A declared column from its SQL definition: a type and `NOT NULL` (or
/// `NULL`); any other column option is refused.
fn column(def: &ColumnDef, personal: bool) -> PgWireResult<Column> {
    let mut not_null = false;
    for option in &def.options {
        match option.option {
            ColumnOption::NotNull => not_null = true,
            ColumnOption::Null => {}
            ref other => {
                return Err(error(
                    "0A000",
                    format!("raw table columns take NOT NULL only, not {other}"),
                ));
            }
        }
    }
    Column::new(
        &def.name.value,
        &def.data_type.to_string(),
        not_null,
        personal,
    )
    .map_err(|e| error("42P16", e))
}

/// `WITH (time = '…', personal = '…, …')`.
fn options(options: &CreateTableOptions) -> PgWireResult<(Option<String>, Vec<String>)> {
    let list: &[SqlOption] = match options {
        CreateTableOptions::None => &[],
        CreateTableOptions::With(list) => list,
        other => {
            return Err(error(
                "0A000",
                format!("raw tables take WITH (time, personal) only, not {other}"),
            ));
        }
    };
    let (mut time, mut personal) = (None, Vec::new());
    for option in list {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(error(
                "22023",
                format!("unrecognized parameter \"{option}\""),
            ));
        };
        let text = value.to_string().trim_matches('\'').to_string();
        match key.value.to_ascii_lowercase().as_str() {
            "time" | "time_column" => time = Some(text),
            "personal" => {
                personal = text
                    .split(',')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect();
            }
            other => {
                return Err(error(
                    "22023",
                    format!("unrecognized parameter \"{other}\" (raw tables take time, personal)"),
                ));
            }
        }
    }
    Ok((time, personal))
}
