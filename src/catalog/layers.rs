//! Reading a view kept as a base and delta layers (see
//! [`crate::lake::manifest::Delta`]): each layer's rows, minus those whose
//! key a later layer wrote again or removed, all layers side by side.
//!
//! The keys each layer supersedes are read once per committed version
//! (small: the rows that changed) and shared by every scan of it;
//! [`LayerExec`] drops the superseded rows of one layer's scan as they
//! stream by, and projects the columns the query asked for.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{HashSet, Result, Statistics};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use object_store::path::Path;

use crate::lake::manifest::Delta;
use crate::lake::{Lake, parquet};

/// The key columns of the layered views (always their first columns).
pub(super) fn key_columns(table: &str) -> usize {
    match table {
        "identity_links" => 2,
        _ => 1,
    }
}

/// Keys of rows: the key columns' values joined by a NUL.
pub(super) type KeySet = HashSet<Box<str>>;

/// Append row `row`'s key (the first `columns` columns of `batch`, all
/// text) to `into`.
fn key_of(batch: &RecordBatch, columns: &[usize], row: usize, into: &mut String) {
    into.clear();
    for (i, &c) in columns.iter().enumerate() {
        if i > 0 {
            into.push('\0');
        }
        let array = batch.column(c).as_string::<i32>();
        if !array.is_null(row) {
            into.push_str(array.value(row));
        }
    }
}

/// For each layer but the last (base first), the keys later layers wrote
/// again or removed.
pub(super) async fn superseded(
    lake: &Lake,
    deltas: &[Delta],
    columns: usize,
) -> crate::error::Result<Vec<Arc<KeySet>>> {
    let mut per_delta: Vec<KeySet> = Vec::with_capacity(deltas.len());
    let (all, mut key): (Vec<usize>, _) = ((0..columns).collect(), String::new());
    for delta in deltas {
        let mut keys = KeySet::default();
        let folders = std::iter::once(&delta.rows).chain(delta.removed.as_ref());
        for folder in folders {
            for meta in lake.list(&Path::from(folder.as_str())).await? {
                parquet::for_each_batch_part(lake, &meta, Some(columns), (0, 1), |b| {
                    for row in 0..b.num_rows() {
                        key_of(b, &all, row, &mut key);
                        keys.insert(key.as_str().into());
                    }
                    Ok(())
                })
                .await?;
            }
        }
        per_delta.push(keys);
    }
    // Layer i (0 = base) loses the keys of deltas i, i + 1, ... (delta j
    // is layer j + 1).
    let mut out: Vec<Arc<KeySet>> = Vec::with_capacity(deltas.len());
    let mut later = KeySet::default();
    for keys in per_delta.into_iter().rev() {
        later.extend(keys);
        out.push(Arc::new(later.clone()));
    }
    out.reverse();
    Ok(out)
}

/// One layer's scan without its superseded rows, projected.
#[derive(Debug)]
pub(super) struct LayerExec {
    input: Arc<dyn ExecutionPlan>,
    /// Positions of the key columns in the input.
    keys: Vec<usize>,
    superseded: Option<Arc<KeySet>>,
    /// Input columns of the output, in order.
    projection: Vec<usize>,
    properties: Arc<PlanProperties>,
}

impl LayerExec {
    pub(super) fn try_new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<usize>,
        superseded: Option<Arc<KeySet>>,
        projection: Vec<usize>,
    ) -> Result<Self> {
        let schema: SchemaRef = Arc::new(input.schema().project(&projection)?);
        let inner = input.properties();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(inner.output_partitioning().partition_count()),
            inner.emission_type,
            inner.boundedness,
        ));
        Ok(LayerExec {
            input,
            keys,
            superseded,
            projection,
            properties,
        })
    }
}

impl LayerExec {
    /// Its key columns, the keys it drops and its projection (for
    /// [`super::codec::PlanCodec`], which sends it to a worker).
    pub(super) fn parts(&self) -> (&[usize], Option<&KeySet>, &[usize]) {
        (&self.keys, self.superseded.as_deref(), &self.projection)
    }
}

impl DisplayAs for LayerExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LayerExec: superseded_keys={}",
            self.superseded.as_ref().map_or(0, |s| s.len())
        )
    }
}

impl ExecutionPlan for LayerExec {
    fn name(&self) -> &str {
        "LayerExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "LayerExec takes one input".into(),
            ));
        }
        Ok(Arc::new(LayerExec::try_new(
            children.remove(0),
            self.keys.clone(),
            self.superseded.clone(),
            self.projection.clone(),
        )?))
    }

    fn partition_statistics(&self, _partition: Option<usize>) -> Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (keys, superseded, projection) = (
            self.keys.clone(),
            self.superseded.clone(),
            self.projection.clone(),
        );
        let schema = self.schema();
        let stream = self.input.execute(partition, context)?;
        let mut key = String::new();
        let kept = stream.map(move |batch| {
            let batch = batch?;
            let batch = match &superseded {
                Some(set) if !set.is_empty() => {
                    let keep: BooleanArray = (0..batch.num_rows())
                        .map(|row| {
                            key_of(&batch, &keys, row, &mut key);
                            Some(!set.contains(key.as_str()))
                        })
                        .collect();
                    filter_record_batch(&batch, &keep)?
                }
                _ => batch,
            };
            Ok(batch.project(&projection)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, kept)))
    }
}
