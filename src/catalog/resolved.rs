//! The `resolved` schema: each raw table that feeds identity resolution,
//! with one more column, `profile_id` — the profile its row belongs to.
//! `SELECT o.*, o.profile_id FROM resolved.orders o` needs no join: each
//! row's identifiers are normalised by their type's rule (as the refresh
//! reads them) and looked up in the [`ProfileIndex`] of the committed
//! version, strongest identifier type first. A row whose identifiers no
//! refresh has seen yet (landed since), or whose rules refuse them all, has
//! a NULL `profile_id`.
//!
//! Filters on the raw columns go to the raw table (file pruning, the lookup
//! index); the profile is computed above its scan. For analysts the schema
//! is masked like `raw`: the profile is found from the real values below
//! the mask, and only the personal columns are masked above it.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::common::{DFSchema, DataFusionError, Result};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TableProviderFilterPushDown, Volatility, col,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;

use super::profile_index::{ProfileIndex, ProfileIndexCache};
use crate::identity::config::IdentityConfig;
use crate::identity::normalize::{self, Country, Invalid, Normalize};
use crate::lake::Lake;

/// The added column.
pub const PROFILE_ID: &str = "profile_id";

/// The `resolved` schema over the (unmasked) `raw` schema.
#[derive(Debug)]
pub struct ResolvedSchema {
    lake: Lake,
    raw: Arc<dyn SchemaProvider>,
    identity: Arc<IdentityConfig>,
    country: Country,
    index: Arc<ProfileIndexCache>,
}

impl ResolvedSchema {
    pub fn new(
        lake: Lake,
        raw: Arc<dyn SchemaProvider>,
        identity: Arc<IdentityConfig>,
        country: Country,
        index: Arc<ProfileIndexCache>,
    ) -> ResolvedSchema {
        ResolvedSchema {
            lake,
            raw,
            identity,
            country,
            index,
        }
    }

    /// Whether raw table `name` feeds identity resolution.
    fn resolves(&self, name: &str) -> bool {
        self.identity.sources.iter().any(|s| s.table == name) && self.raw.table_exist(name)
    }
}

#[async_trait]
impl SchemaProvider for ResolvedSchema {
    fn table_names(&self) -> Vec<String> {
        self.raw
            .table_names()
            .into_iter()
            .filter(|name| self.resolves(name))
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if !self.resolves(name) {
            return Ok(None);
        }
        let Some(raw) = self.raw.table(name).await? else {
            return Ok(None);
        };
        ResolvedTable::new(self, name, raw).map(|t| Some(Arc::new(t) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.resolves(name)
    }
}

/// One identifier source of a table: where its values are and its rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Rule {
    /// Position of the column in the raw table.
    column: usize,
    id_type: String,
    normalize: Normalize,
    invalid: Invalid,
    json_path: Option<Vec<String>>,
}

/// A raw table and the profile of each row.
#[derive(Debug)]
struct ResolvedTable {
    lake: Lake,
    raw: Arc<dyn TableProvider>,
    schema: SchemaRef,
    /// Strongest identifier type first (the refresh's order).
    rules: Vec<Rule>,
    country: Country,
    index: Arc<ProfileIndexCache>,
}

impl ResolvedTable {
    fn new(
        schema: &ResolvedSchema,
        name: &str,
        raw: Arc<dyn TableProvider>,
    ) -> Result<ResolvedTable> {
        let raw_schema = raw.schema();
        if raw_schema.field_with_name(PROFILE_ID).is_ok() {
            return Err(DataFusionError::Plan(format!(
                "resolved.{name} cannot be offered: raw.{name} has a column of its own named \
                 {PROFILE_ID}"
            )));
        }
        let config = &schema.identity;
        let rules = config
            .sources_of(name)
            .into_iter()
            .filter_map(|(_, source, _, id_type)| {
                Some(Rule {
                    column: raw_schema.index_of(&source.column).ok()?,
                    id_type: id_type.name.clone(),
                    normalize: id_type.normalize,
                    invalid: id_type.invalid,
                    json_path: source
                        .json_path
                        .as_ref()
                        .map(|p| p.split('.').map(String::from).collect()),
                })
            })
            .collect();
        let mut fields: Vec<Field> = raw_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(PROFILE_ID, DataType::Utf8, true));
        Ok(ResolvedTable {
            lake: schema.lake.clone(),
            raw,
            schema: Arc::new(Schema::new_with_metadata(
                fields,
                raw_schema.metadata().clone(),
            )),
            rules,
            country: schema.country,
            index: Arc::clone(&schema.index),
        })
    }

    /// Whether `filter` reads only raw columns (it can go to the raw table).
    fn on_raw_columns(filter: &Expr) -> bool {
        !filter.column_refs().iter().any(|c| c.name == PROFILE_ID)
    }
}

#[async_trait]
impl TableProvider for ResolvedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    /// Filters on raw columns go to the raw table (which prunes files or
    /// answers from its lookup index) and are applied again above.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let raw: Vec<&Expr> = filters
            .iter()
            .copied()
            .filter(|f| Self::on_raw_columns(f))
            .collect();
        let mut answers = self.raw.supports_filters_pushdown(&raw)?.into_iter();
        Ok(filters
            .iter()
            .map(
                |f| match Self::on_raw_columns(f).then(|| answers.next()).flatten() {
                    Some(TableProviderFilterPushDown::Unsupported) | None => {
                        TableProviderFilterPushDown::Unsupported
                    }
                    Some(_) => TableProviderFilterPushDown::Inexact,
                },
            )
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let profile_column = self.schema.fields().len() - 1;
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let wants_profile = wanted.contains(&profile_column);
        let mut read: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|&i| i != profile_column)
            .collect();
        if wants_profile {
            for rule in &self.rules {
                if !read.contains(&rule.column) {
                    read.push(rule.column);
                }
            }
        }
        let raw_filters: Vec<Expr> = filters
            .iter()
            .filter(|f| Self::on_raw_columns(f))
            .cloned()
            .collect();
        let input = self
            .raw
            .scan(state, Some(&read), &raw_filters, limit)
            .await?;
        let input_schema = DFSchema::try_from(input.schema())?;
        let index = if wants_profile {
            self.index
                .committed(&self.lake)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
        } else {
            None
        };
        let raw_fields = self.raw.schema();
        let mut exprs = Vec::with_capacity(wanted.len());
        for &i in &wanted {
            let expr = if i == profile_column {
                let args = self
                    .rules
                    .iter()
                    .map(|r| col(raw_fields.field(r.column).name()))
                    .collect();
                let udf = ScalarUDF::new_from_impl(ProfileOf::new(
                    index.clone(),
                    self.rules.clone(),
                    self.country,
                ));
                udf.call(args)
            } else {
                col(raw_fields.field(i).name())
            };
            let physical = state.create_physical_expr(expr, &input_schema)?;
            exprs.push((physical, self.schema.field(i).name().clone()));
        }
        Ok(Arc::new(ProjectionExec::try_new(exprs, input)?))
    }
}

/// `profile_id(<the table's identifier columns>)`: the profile of each row,
/// from one version's [`ProfileIndex`]. Built per scan, never registered.
#[derive(Debug)]
struct ProfileOf {
    index: Option<Arc<ProfileIndex>>,
    /// The rules, `column` being the argument's position.
    rules: Vec<Rule>,
    country: Country,
    signature: Signature,
}

impl ProfileOf {
    fn new(index: Option<Arc<ProfileIndex>>, rules: Vec<Rule>, country: Country) -> ProfileOf {
        // The arguments are the rules' columns in rule order.
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(argument, r)| Rule {
                column: argument,
                ..r
            })
            .collect();
        ProfileOf {
            index,
            rules,
            country,
            signature: Signature::variadic_any(Volatility::Stable),
        }
    }

    /// The profile of one row's identifier values.
    fn profile<'a>(&'a self, index: &'a ProfileIndex, values: &[Option<&str>]) -> Option<&'a str> {
        self.rules.iter().find_map(|rule| {
            let raw = values[rule.column]?;
            let extracted = match &rule.json_path {
                Some(path) => Cow::Owned(normalize::at_json_path(raw, path)?),
                None => Cow::Borrowed(raw),
            };
            let value =
                normalize::identifier(rule.normalize, rule.invalid, &extracted, self.country)
                    .ok()??;
            index
                .find(&rule.id_type, &value)
                .map(|row| index.profile_id(row))
        })
    }
}

impl PartialEq for ProfileOf {
    fn eq(&self, other: &Self) -> bool {
        self.rules == other.rules
            && match (&self.index, &other.index) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for ProfileOf {}

impl std::hash::Hash for ProfileOf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.rules.hash(state);
        self.index.as_ref().map(|i| i.version()).hash(state);
    }
}

impl ScalarUDFImpl for ProfileOf {
    fn name(&self) -> &str {
        PROFILE_ID
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let texts = ColumnarValue::values_to_arrays(&args.args)?
            .iter()
            .map(|a| cast(a, &DataType::Utf8))
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
        let texts: Vec<_> = texts.iter().map(|a| a.as_string::<i32>()).collect();
        let mut out = StringBuilder::with_capacity(rows, rows * 16);
        let mut values = vec![None; texts.len()];
        for row in 0..rows {
            let Some(index) = &self.index else {
                out.append_null();
                continue;
            };
            for (value, text) in values.iter_mut().zip(&texts) {
                *value = text.is_valid(row).then(|| text.value(row));
            }
            out.append_option(self.profile(index, &values));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
