//! The scan of a point lookup as one leaf node: the Parquet scan of the
//! rows the key index found, closed to the optimizer.
//!
//! The rows are already chosen, so the physical optimizer has nothing to
//! add: pushing the filter into the Parquet scan would make it evaluate
//! statistics and the page index of files it reads a row of anyway, and
//! the unknown row count that follows would make it split the scan's
//! output over every core. [`LookupExec`] has no children for the
//! optimizer to reach into, and states its exact row count.

use std::fmt;
use std::sync::Arc;

use datafusion::common::Statistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// A scan of `rows` rows picked by the lookup index.
#[derive(Debug)]
pub(super) struct LookupExec {
    scan: Arc<dyn ExecutionPlan>,
    rows: usize,
}

impl LookupExec {
    pub(super) fn new(scan: Arc<dyn ExecutionPlan>, rows: usize) -> Self {
        LookupExec { scan, rows }
    }
}

impl DisplayAs for LookupExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LookupExec: rows={}, ", self.rows)?;
        self.scan.fmt_as(t, f)
    }
}

impl ExecutionPlan for LookupExec {
    fn name(&self) -> &str {
        "LookupExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.scan.properties()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.scan.execute(partition, context)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.scan.metrics()
    }

    fn partition_statistics(&self, _partition: Option<usize>) -> Result<Arc<Statistics>> {
        let schema = self.scan.schema();
        Ok(Arc::new(
            Statistics::new_unknown(&schema).with_num_rows(Precision::Exact(self.rows)),
        ))
    }
}
