//! Personal data masked at the table scan, for the `analyst` role.
//!
//! The analyst session's schemas wrap every table: a scan of a table with
//! personal columns (email, phone, names, street address, identifier
//! values, whole raw rows) reads the inner table and passes each batch
//! through [`MaskExec`], which replaces every non-null value of those
//! columns by `***` (lists keep their length, JSON keeps its shape with the
//! personal keys masked). A filter that reads a masked column is never
//! pushed below the mask (one that reads only unmasked columns, such as
//! `customer_id = $1`, is also given to the table, so an analyst's lookup
//! uses the key index), and the mask claims no ordering or partitioning on
//! the columns it rewrites, so every filter, join, function, subquery,
//! `UNION` and `COPY` planned above it only ever sees masked values:
//! `WHERE email LIKE 'a%'` matches nothing.
//! Analysts join and count by `profile_id` and the other ids.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, GenericListArray, RecordBatch, RecordBatchOptions, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Result, Statistics};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use serde_json::Value;

/// What a masked value reads as.
pub const MASK: &str = "***";

/// Columns whose every value is personal.
const PERSONAL: &[&str] = &[
    "email",
    "emails",
    "phone",
    "phones",
    "first_name",
    "last_name",
    "street",
    "postal_code",
    // identifier values of any type (emails and phones among them)
    "id_value",
    "other_value",
    "cause_value",
    "value",
    // a rejected row as it was sent
    "raw",
];

/// JSON columns whose personal keys are masked.
const JSON_COLUMNS: &[&str] = &["properties", "traits", "context"];

/// Keys masked inside JSON columns (any depth, any case).
const PERSONAL_KEYS: &[&str] = &[
    "email",
    "phone",
    "first_name",
    "last_name",
    "firstname",
    "lastname",
    "name",
    "street",
    "address",
    "postal_code",
    "postalcode",
    "zip",
    "ip",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mask {
    Whole,
    Json,
}

fn mask_of(field: &Field) -> Option<Mask> {
    let name = field.name().to_lowercase();
    if PERSONAL.contains(&name.as_str()) {
        Some(Mask::Whole)
    } else if JSON_COLUMNS.contains(&name.as_str()) {
        Some(Mask::Json)
    } else {
        None
    }
}

/// A schema whose tables are masked.
#[derive(Debug)]
pub struct MaskedSchema(pub Arc<dyn SchemaProvider>);

#[async_trait]
impl SchemaProvider for MaskedSchema {
    fn table_names(&self) -> Vec<String> {
        self.0.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.0.table(name).await?.map(masked))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.table_exist(name)
    }
}

/// `table`, masked if it has personal columns.
pub fn masked(table: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
    if table.schema().fields().iter().any(|f| mask_of(f).is_some()) {
        Arc::new(MaskedTable(table))
    } else {
        table
    }
}

#[derive(Debug)]
struct MaskedTable(Arc<dyn TableProvider>);

#[async_trait]
impl TableProvider for MaskedTable {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        self.0.table_type()
    }

    /// A filter that reads a masked column stays above the mask (below it,
    /// it would see the real values). One that reads only unmasked columns
    /// (`customer_id = $1`) also goes to the table, where it prunes files
    /// or answers from the lookup index; it is still applied above.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.unmasked_only(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let unmasked: Vec<Expr> = filters
            .iter()
            .filter(|f| self.unmasked_only(f))
            .cloned()
            .collect();
        let input = self.0.scan(state, projection, &unmasked, limit).await?;
        Ok(Arc::new(MaskExec::new(input)))
    }
}

impl MaskedTable {
    /// Whether `filter` reads only columns the mask leaves alone (and no
    /// subquery, which could read anything).
    fn unmasked_only(&self, filter: &Expr) -> bool {
        let schema = self.0.schema();
        let subquery = filter
            .exists(|e| {
                Ok(matches!(
                    e,
                    Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                ))
            })
            .unwrap_or(true);
        !subquery
            && filter.column_refs().iter().all(|c| {
                schema
                    .field_with_name(&c.name)
                    .is_ok_and(|f| mask_of(f).is_none())
            })
    }
}

/// Masks the personal columns of its input's batches.
#[derive(Debug)]
pub struct MaskExec {
    input: Arc<dyn ExecutionPlan>,
    masks: Vec<Option<Mask>>,
    properties: Arc<PlanProperties>,
}

impl MaskExec {
    fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let schema = input.schema();
        let masks = schema.fields().iter().map(|f| mask_of(f)).collect();
        let inner = input.properties();
        // No ordering or partitioning is claimed: masked values break both.
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(inner.output_partitioning().partition_count()),
            inner.emission_type,
            inner.boundedness,
        ));
        MaskExec {
            input,
            masks,
            properties,
        }
    }
}

impl DisplayAs for MaskExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let schema = self.input.schema();
        let names: Vec<&str> = schema
            .fields()
            .iter()
            .zip(&self.masks)
            .filter(|(_, m)| m.is_some())
            .map(|(f, _)| f.name().as_str())
            .collect();
        write!(
            f,
            "MaskExec: personal columns masked=[{}]",
            names.join(", ")
        )
    }
}

impl ExecutionPlan for MaskExec {
    fn name(&self) -> &str {
        "MaskExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        // No expressions of its own: the mask is a fixed rewrite of values.
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(MaskExec::new(children.remove(0))))
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    /// As many rows as its input (nothing known of the masked values).
    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let mut statistics = Statistics::new_unknown(&self.schema());
        if let Some(input) = input_stats.first() {
            statistics.num_rows = input.num_rows;
        }
        Ok(Arc::new(statistics))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let masks = self.masks.clone();
        let schema = self.input.schema();
        let stream = self.input.execute(partition, context)?;
        let out_schema = Arc::clone(&schema);
        let masked = stream.map(move |batch| mask_batch(&batch?, &masks, &out_schema));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, masked)))
    }
}

fn mask_batch(
    batch: &RecordBatch,
    masks: &[Option<Mask>],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(masks)
        .map(|(column, mask)| match mask {
            None => Ok(Arc::clone(column)),
            Some(mask) => mask_column(column, *mask),
        })
        .collect::<Result<Vec<_>>>()?;
    // A scan for `count(*)` projects no column at all: keep the row count.
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

fn mask_column(column: &ArrayRef, mask: Mask) -> Result<ArrayRef> {
    let original = column.data_type().clone();
    match &original {
        DataType::List(field) => {
            let list = column.as_list::<i32>();
            let values = mask_column(list.values(), mask)?;
            Ok(Arc::new(GenericListArray::<i32>::try_new(
                Arc::clone(field),
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _) => {
            let text = cast(column, &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            let out: StringArray = match mask {
                Mask::Whole => text.iter().map(|v| v.map(|_| MASK)).collect(),
                Mask::Json => text
                    .iter()
                    .map(|v| v.map(mask_json))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .collect(),
            };
            Ok(cast(&(Arc::new(out) as ArrayRef), &original)?)
        }
        // Dates, numbers: nothing personal is stored that way here.
        _ => Ok(Arc::clone(column)),
    }
}

/// A JSON text with the values of personal keys masked, at any depth; a
/// text that is not JSON is masked whole.
fn mask_json(text: &str) -> String {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if PERSONAL_KEYS.contains(&key.to_lowercase().as_str()) && !v.is_object() {
                        *v = Value::String(MASK.into());
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    match serde_json::from_str::<Value>(text) {
        Ok(mut value) => {
            walk(&mut value);
            value.to_string()
        }
        Err(_) => MASK.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_its_shape_without_personal_values() {
        assert_eq!(
            mask_json(
                r#"{"email":"a@x.com","plan":"gold","traits":{"Phone":"+33","age":4},"items":[{"name":"x"}]}"#
            ),
            r#"{"email":"***","items":[{"name":"***"}],"plan":"gold","traits":{"Phone":"***","age":4}}"#
        );
        assert_eq!(mask_json("not json"), MASK);
    }
}
