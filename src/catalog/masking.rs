//! Personal data masked at the table scan, for the `analyst` role.
//!
//! The analyst session's schemas wrap every table whose columns carry
//! personal data: its scan reads the inner table and passes each batch
//! through [`MaskExec`], which replaces every non-null value of those
//! columns by `***` (lists keep their length) and, in JSON columns, every
//! value outside an allow-list of paths ([`MaskPolicy`]). Which columns are
//! personal: by name in raw, `cdp` and `system` tables (email, phone,
//! names, street address, identifier values, rejected rows as sent), and
//! the columns a declared raw table flags `personal`; by
//! lineage in views and job tables ([`super::lineage`]), so a column
//! computed from personal data is masked under any name.
//!
//! [`MaskExec`] is a leaf of the plan: the real scan below it runs but is
//! never shown, so no `EXPLAIN` — verbose, analysed, with statistics —
//! prints a statistic, literal or file range of unmasked data. A filter
//! that reads a masked column is never pushed below the mask (one that
//! reads only unmasked columns, such as `customer_id = $1`, is also given
//! to the table, so an analyst's lookup uses the key index), and the mask
//! claims no ordering, partitioning or statistics, so every filter, join,
//! function, subquery, `UNION` and `COPY` planned above it only ever sees
//! masked values: `WHERE email LIKE 'a%'` matches nothing. Analysts join
//! and count by `profile_id` and the other ids.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, GenericListArray, RecordBatch, RecordBatchOptions, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Result, Statistics};
use datafusion::datasource::{TableType, ViewTable};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a masked value reads as.
pub const MASK: &str = "***";

/// Columns whose every value is personal, in every table.
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

/// JSON columns whose keys outside the allow-list are masked.
const JSON_COLUMNS: &[&str] = &[
    "properties",
    "traits",
    "context",
    crate::schema::EXTRA_COLUMN,
];

/// How a column is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mask {
    /// Every non-null value reads `***` (lists keep their length).
    Whole,
    /// JSON text: only the values at allowed paths stay readable.
    Json,
}

/// One mask (or none) per column of a schema, in order.
pub type Masks = Vec<Option<Mask>>;

/// The masks a column's name (or, for a declared table's column, its
/// `personal` flag) calls for.
fn mask_of(field: &Field) -> Option<Mask> {
    let name = field.name().to_lowercase();
    let declared_personal = field
        .metadata()
        .get(crate::schema::declared::PERSONAL_METADATA)
        .is_some_and(|v| v == "true");
    if declared_personal || PERSONAL.contains(&name.as_str()) {
        Some(Mask::Whole)
    } else if JSON_COLUMNS.contains(&name.as_str()) {
        Some(Mask::Json)
    } else {
        None
    }
}

/// `masks` of a table, for the columns a scan `projection` reads.
pub fn projected(masks: &[Option<Mask>], projection: Option<&Vec<usize>>) -> Masks {
    match projection {
        Some(indices) => indices
            .iter()
            .map(|i| masks.get(*i).copied().flatten())
            .collect(),
        None => masks.to_vec(),
    }
}

/// The masks of `schema`'s columns by their names.
pub fn name_masks(schema: &Schema) -> Masks {
    schema.fields().iter().map(|f| mask_of(f)).collect()
}

/// The masks of `table`'s columns: a view's from the lineage of its plan
/// (personal data keeps its mask under any name), a job table's as
/// recorded when it was written, any other table's by column names.
pub fn masks_of(table: &dyn TableProvider, policy: &MaskPolicy) -> Masks {
    let by_name = name_masks(&table.schema());
    let found = if let Some(view) = table.downcast_ref::<ViewTable>() {
        super::lineage::plan_masks(view.logical_plan(), policy)
    } else if let Some(classified) = table.downcast_ref::<Classified>() {
        classified.masks.clone()
    } else if let Some(masked) = table.downcast_ref::<MaskedTable>() {
        masked.masks.clone()
    } else {
        return by_name;
    };
    // Never weaker than the names say.
    by_name
        .into_iter()
        .zip(found.into_iter().chain(std::iter::repeat(None)))
        .map(|(name, lineage)| match (name, lineage) {
            (Some(Mask::Whole), _) | (_, Some(Mask::Whole)) => Some(Mask::Whole),
            (a, b) => a.or(b),
        })
        .collect()
}

/// The `[masking]` section of `panorama.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingConfig {
    /// More JSON paths analysts may read (`"properties.sku"`,
    /// `"context.campaign.*"`), added to the built-in ones.
    pub json_allow: Vec<String>,
    /// Use `json_allow` alone, without the built-in paths.
    pub replace_defaults: bool,
}

/// The JSON paths (column, then keys; arrays are walked through) whose
/// values analysts may read: what Segment's and RudderStack's specs put in
/// `properties` and `context` about products, orders, pages, devices and
/// campaigns, and plan-like traits. Everything else in a JSON column reads
/// `***`. An allow-list, not a deny-list: a key nobody thought of
/// (`email_address`, `mobile`, `name.first`) is masked by default.
pub const DEFAULT_JSON_ALLOW: &[&str] = &[
    "properties.product_id",
    "properties.sku",
    "properties.category",
    "properties.brand",
    "properties.variant",
    "properties.price",
    "properties.quantity",
    "properties.revenue",
    "properties.total",
    "properties.subtotal",
    "properties.currency",
    "properties.order_id",
    "properties.checkout_id",
    "properties.cart_id",
    "properties.coupon",
    "properties.discount",
    "properties.shipping",
    "properties.tax",
    "properties.value",
    "properties.position",
    "properties.path",
    "properties.title",
    "properties.plan",
    "properties.step",
    "properties.method",
    "properties.survey",
    "properties.score",
    "properties.products.*",
    "context.library.*",
    "context.device.type",
    "context.device.manufacturer",
    "context.device.model",
    "context.os.*",
    "context.app.*",
    "context.locale",
    "context.timezone",
    "context.user_agent",
    "context.screen.*",
    "context.campaign.*",
    "context.page.path",
    "context.page.title",
    "context.integrations.*",
    "context.consent.*",
    "context.consent_management.*",
    "traits.plan",
    "traits.tier",
    "traits.loyalty_tier",
    "traits.industry",
    "traits.employees",
    "traits.created_at",
];

/// What analysts may read inside JSON columns.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskPolicy {
    /// Normalised paths ([`normalise`]); a trailing `*` allows everything
    /// below.
    allowed: Vec<String>,
}

impl Default for MaskPolicy {
    fn default() -> Self {
        MaskPolicy::new(&MaskingConfig::default())
    }
}

/// A path or key as compared: lower case, without `_` and `-`, so
/// `productId`, `product_id` and `Product-ID` are one key.
fn normalise(path: &str) -> String {
    path.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

impl MaskPolicy {
    pub fn new(config: &MaskingConfig) -> MaskPolicy {
        let defaults = (!config.replace_defaults).then_some(DEFAULT_JSON_ALLOW);
        let allowed = defaults
            .into_iter()
            .flatten()
            .map(|p| p.to_string())
            .chain(config.json_allow.iter().cloned())
            .map(|p| normalise(&p))
            .collect();
        MaskPolicy { allowed }
    }

    /// The normalised paths it allows (what a plan sent to a worker
    /// carries: [`MaskPolicy::from_allowed`] makes the same policy).
    pub(super) fn allowed(&self) -> &[String] {
        &self.allowed
    }

    /// The policy allowing `allowed` ([`MaskPolicy::allowed`]) alone.
    pub(super) fn from_allowed(allowed: Vec<String>) -> MaskPolicy {
        let config = MaskingConfig {
            json_allow: allowed,
            replace_defaults: true,
        };
        MaskPolicy::new(&config)
    }

    /// The policy a session was built with (the defaults if none).
    pub fn of_session(state: &datafusion::execution::SessionState) -> Arc<MaskPolicy> {
        state
            .config()
            .get_extension::<MaskPolicy>()
            .unwrap_or_default()
    }

    /// Whether the value at `path` (`column.key.key`, or `key.key` inside
    /// any JSON column) may be read.
    fn allowed_path(&self, path: &str) -> bool {
        let path = normalise(path);
        self.allowed.iter().any(|a| match a.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => *a == path,
        })
    }

    /// Whether `json_get_str(column, key_path)` may be read.
    pub fn allows(&self, column: &str, key_path: &str) -> bool {
        self.allowed_path(&format!("{}.{key_path}", column.to_lowercase()))
    }

    /// Whether some allowed path lies below `path`.
    fn leads_somewhere(&self, path: &str) -> bool {
        let path = normalise(path);
        self.allowed.iter().any(|a| {
            a.starts_with(&format!("{path}."))
                || a.strip_suffix('*').is_some_and(|p| path.starts_with(p))
        })
    }

    /// `text` (the JSON of `column`) with every value outside the allowed
    /// paths masked; an object with nothing allowed below it is masked
    /// whole, and an allowed value that looks like an email address or a
    /// phone number is masked all the same. Text that is not JSON is
    /// masked whole.
    pub fn mask_json(&self, column: &str, text: &str) -> String {
        let Ok(mut value) = serde_json::from_str::<Value>(text) else {
            return MASK.into();
        };
        self.walk(&mut value, &column.to_lowercase());
        value.to_string()
    }

    fn walk(&self, value: &mut Value, path: &str) {
        match value {
            Value::Object(map) => {
                if !self.leads_somewhere(path) && !self.allowed_path(path) {
                    *value = Value::String(MASK.into());
                    return;
                }
                for (key, v) in map.iter_mut() {
                    self.walk(v, &format!("{path}.{key}"));
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.walk(v, path)),
            Value::Null => {}
            leaf => {
                let readable = self.allowed_path(path) && !looks_personal(leaf);
                if !readable {
                    *leaf = Value::String(MASK.into());
                }
            }
        }
    }
}

/// A value that reads like an email address or a phone number.
fn looks_personal(value: &Value) -> bool {
    let Value::String(text) = value else {
        return false;
    };
    let email = text.contains('@') && text.contains('.');
    let digits = text.chars().filter(char::is_ascii_digit).count();
    let phone = digits >= 9
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || " +-.()/".contains(c));
    email || phone
}

/// A table whose columns' masks were recorded when it was written (a job
/// table: personal by lineage, not by name).
#[derive(Debug)]
pub struct Classified {
    inner: Arc<dyn TableProvider>,
    masks: Masks,
}

impl Classified {
    pub fn new(inner: Arc<dyn TableProvider>, masks: Masks) -> Classified {
        Classified { inner, masks }
    }
}

#[async_trait]
impl TableProvider for Classified {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.scan(state, projection, filters, limit).await
    }
}

/// A schema whose tables are masked.
#[derive(Debug)]
pub struct MaskedSchema {
    inner: Arc<dyn SchemaProvider>,
    policy: Arc<MaskPolicy>,
}

impl MaskedSchema {
    pub fn new(inner: Arc<dyn SchemaProvider>, policy: Arc<MaskPolicy>) -> MaskedSchema {
        MaskedSchema { inner, policy }
    }

    /// The schema whose tables it masks.
    pub fn inner(&self) -> &Arc<dyn SchemaProvider> {
        &self.inner
    }
}

#[async_trait]
impl SchemaProvider for MaskedSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .inner
            .table(name)
            .await?
            .map(|t| masked(t, &self.policy)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `table`, masked if it has personal columns. A view is always wrapped,
/// personal columns or not: it runs with its definer's rights over the
/// unmasked tables, so its plan must stay behind the mask's leaf (never
/// inlined into the analyst's plan, where `EXPLAIN` would show the
/// unmasked scans and their statistics, and filters could reach them).
pub fn masked(table: Arc<dyn TableProvider>, policy: &Arc<MaskPolicy>) -> Arc<dyn TableProvider> {
    let masks = masks_of(table.as_ref(), policy);
    let view = table.downcast_ref::<ViewTable>().is_some();
    if view || masks.iter().any(Option::is_some) {
        Arc::new(MaskedTable {
            inner: table,
            masks,
            policy: Arc::clone(policy),
        })
    } else {
        table
    }
}

#[derive(Debug)]
struct MaskedTable {
    inner: Arc<dyn TableProvider>,
    masks: Masks,
    policy: Arc<MaskPolicy>,
}

#[async_trait]
impl TableProvider for MaskedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    /// A filter that reads a masked column stays above the mask (below it,
    /// it would see the real values). One that reads only unmasked columns
    /// (`customer_id = $1`) also goes to the table, where it prunes files
    /// or answers from the lookup index; it is still applied above.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        if self.inner.downcast_ref::<ViewTable>().is_some() {
            // A view runs with its definer's rights: nothing goes below.
            return Ok(vec![
                TableProviderFilterPushDown::Unsupported;
                filters.len()
            ]);
        }
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
        let input = self.inner.scan(state, projection, &unmasked, limit).await?;
        let masks = projected(&self.masks, projection);
        Ok(Arc::new(MaskExec::new(
            input,
            masks,
            Arc::clone(&self.policy),
        )))
    }
}

impl MaskedTable {
    /// Whether `filter` reads only columns the mask leaves alone (and no
    /// subquery, which could read anything).
    fn unmasked_only(&self, filter: &Expr) -> bool {
        let schema = self.inner.schema();
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
                    .index_of(&c.name)
                    .is_ok_and(|i| self.masks.get(i).copied().flatten().is_none())
            })
    }
}

/// Masks the personal columns of the plan it wraps. It is a leaf: the plan
/// below (the real scan, a view's plan) is run but never shown, so no
/// `EXPLAIN` — verbose, analysed or with statistics — prints a statistic,
/// a literal or a file range of the unmasked data; and it claims no
/// statistics, ordering or partitioning of its own.
#[derive(Debug)]
pub struct MaskExec {
    input: Arc<dyn ExecutionPlan>,
    masks: Masks,
    policy: Arc<MaskPolicy>,
    properties: Arc<PlanProperties>,
}

impl MaskExec {
    pub(super) fn new(
        input: Arc<dyn ExecutionPlan>,
        masks: Masks,
        policy: Arc<MaskPolicy>,
    ) -> Self {
        let schema = input.schema();
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
            policy,
            properties,
        }
    }
}

impl MaskExec {
    /// The plan it hides, its masks and its policy (for
    /// [`super::codec::PlanCodec`], which sends it to a worker).
    pub(super) fn parts(&self) -> (&Arc<dyn ExecutionPlan>, &Masks, &Arc<MaskPolicy>) {
        (&self.input, &self.masks, &self.policy)
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
        // The kind of scan below (its name only: its details would show
        // statistics and ranges of the unmasked data).
        write!(
            f,
            "MaskExec: personal columns masked=[{}], partitions={}, reads={}",
            names.join(", "),
            self.properties.output_partitioning().partition_count(),
            self.input.name()
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
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            datafusion::common::internal_err!("MaskExec has no children")
        }
    }

    /// The scan below may split its files over more partitions.
    fn repartitioned(
        &self,
        target_partitions: usize,
        config: &datafusion::config::ConfigOptions,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        Ok(self
            .input
            .repartitioned(target_partitions, config)?
            .map(|input| {
                Arc::new(MaskExec::new(
                    input,
                    self.masks.clone(),
                    Arc::clone(&self.policy),
                )) as Arc<dyn ExecutionPlan>
            }))
    }

    /// Nothing is known: a statistic of the values below would show them.
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let masks = self.masks.clone();
        let policy = Arc::clone(&self.policy);
        let schema = self.input.schema();
        let stream = self.input.execute(partition, context)?;
        let out_schema = Arc::clone(&schema);
        let masked = stream.map(move |batch| mask_batch(&batch?, &masks, &policy, &out_schema));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, masked)))
    }
}

/// `batch` as an analyst reads it: its personal columns (by name, as in
/// raw tables: results that keep the raw columns' names) masked.
pub fn mask_by_name(batch: &RecordBatch, policy: &MaskPolicy) -> Result<RecordBatch> {
    let schema = batch.schema();
    let masks = name_masks(&schema);
    let out = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .zip(&masks)
            .map(|(f, m)| match m {
                Some(_) => Arc::new(f.as_ref().clone().with_nullable(true)),
                None => Arc::clone(f),
            })
            .collect::<Vec<_>>(),
    ));
    mask_batch(batch, &masks, policy, &out)
}

fn mask_batch(
    batch: &RecordBatch,
    masks: &[Option<Mask>],
    policy: &MaskPolicy,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(masks)
        .zip(schema.fields())
        .map(|((column, mask), field)| match mask {
            None => Ok(Arc::clone(column)),
            Some(mask) => mask_column(column, *mask, policy, field.name()),
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

fn mask_column(column: &ArrayRef, mask: Mask, policy: &MaskPolicy, name: &str) -> Result<ArrayRef> {
    let original = column.data_type().clone();
    match &original {
        DataType::List(field) => {
            let list = column.as_list::<i32>();
            let values = mask_column(list.values(), mask, policy, name)?;
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
                    .map(|v| v.map(|text| policy.mask_json(name, text)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_its_shape_and_only_allowed_paths() {
        let policy = MaskPolicy::default();
        assert_eq!(
            policy.mask_json(
                "properties",
                r#"{"email_address":"a@x.com","productId":"p1","price":3,"name":{"first":"Jeanne"},"products":[{"sku":"s","mobile":"0612345678"}]}"#
            ),
            r#"{"email_address":"***","name":"***","price":3,"productId":"p1","products":[{"mobile":"***","sku":"s"}]}"#
        );
        assert_eq!(policy.mask_json("traits", "not json"), MASK);
    }

    #[test]
    fn every_common_spelling_of_a_personal_key_is_masked() {
        let policy = MaskPolicy::default();
        for key in [
            "email",
            "email_address",
            "emailAddress",
            "phone_number",
            "mobile",
            "full_name",
            "username",
            "birthday",
            "name",
            "firstName",
            "ip",
            "address",
        ] {
            let masked = policy.mask_json("traits", &format!(r#"{{"{key}":"v"}}"#));
            assert_eq!(masked, format!(r#"{{"{key}":"***"}}"#), "{key}");
        }
    }

    #[test]
    fn allowed_keys_holding_an_email_or_a_phone_are_masked_anyway() {
        let policy = MaskPolicy::default();
        assert_eq!(
            policy.mask_json(
                "properties",
                r#"{"coupon":"jane@x.com","sku":"+33 6 12 34 56 78","order_id":"o-1"}"#
            ),
            r#"{"coupon":"***","order_id":"o-1","sku":"***"}"#
        );
    }

    #[test]
    fn configured_paths_add_to_the_defaults_or_replace_them() {
        let added = MaskPolicy::new(&MaskingConfig {
            json_allow: vec!["traits.favourite_colour".into()],
            replace_defaults: false,
        });
        assert_eq!(
            added.mask_json("traits", r#"{"favourite_colour":"red","plan":"gold"}"#),
            r#"{"favourite_colour":"red","plan":"gold"}"#
        );
        let only = MaskPolicy::new(&MaskingConfig {
            json_allow: vec!["traits.favourite_colour".into()],
            replace_defaults: true,
        });
        assert_eq!(
            only.mask_json("traits", r#"{"favourite_colour":"red","plan":"gold"}"#),
            r#"{"favourite_colour":"red","plan":"***"}"#
        );
    }
}
