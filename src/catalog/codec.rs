//! How the catalog's own plan nodes travel to another machine: the
//! [`PlanCodec`] a distributed plan is encoded with (datafusion-proto does
//! DataFusion's nodes, this does Panorama's), and [`shippable`], which
//! says whether a plan can leave this process at all.
//!
//! A layer of a `cdp` view ([`LayerExec`]) travels with the keys it drops;
//! a masked scan ([`MaskExec`]) with its masks, its policy and the plan it
//! hides, so the worker that scans masks before anything leaves it. What
//! cannot travel is refused at encoding, and the query then runs on the
//! front end: a point lookup's row selection (not carried by
//! datafusion-proto), and `profile_id()` over the `resolved` schema (its
//! identifier index is the front end's, in memory). A masked scan of a
//! raw table can also be split over several workers
//! ([`split_masked_scan`]), each part masked where it is read.

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::physical_plan::{FileGroupPartitioner, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::PhysicalPlanNode;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::layers::{KeySet, LayerExec};
use super::masking::{Mask, MaskExec, MaskPolicy};
use super::resolved::PROFILE_ID;

/// Encodes and decodes Panorama's plan nodes. Stateless: every node
/// carries what it needs, so a worker decodes it without the front end's
/// catalog.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlanCodec;

/// A node as it travels: which one, and its settings.
#[derive(Serialize, Deserialize)]
enum Node {
    Layer {
        keys: Vec<usize>,
        superseded: Option<Vec<String>>,
        projection: Vec<usize>,
    },
    Mask {
        masks: Vec<Option<Mask>>,
        allowed: Vec<String>,
        /// The hidden plan, a datafusion-proto `PhysicalPlanNode`.
        input: Vec<u8>,
    },
}

fn encoding(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("encoding a plan for a worker: {e}"))
}

impl PhysicalExtensionCodec for PlanCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node: Node = serde_json::from_slice(buf).map_err(encoding)?;
        match node {
            Node::Layer {
                keys,
                superseded,
                projection,
            } => {
                let [input] = inputs else {
                    return Err(encoding("a LayerExec arrived without its one input"));
                };
                let superseded =
                    superseded.map(|keys| Arc::new(keys.into_iter().map(Box::from).collect()));
                Ok(Arc::new(LayerExec::try_new(
                    Arc::clone(input),
                    keys,
                    superseded,
                    projection,
                )?))
            }
            Node::Mask {
                masks,
                allowed,
                input,
            } => {
                let proto = PhysicalPlanNode::decode(input.as_slice()).map_err(encoding)?;
                let context = PhysicalPlanDecodeContext::new(ctx, self);
                let input = proto_converter.proto_to_execution_plan(&proto, &context)?;
                let policy = Arc::new(MaskPolicy::from_allowed(allowed));
                Ok(Arc::new(MaskExec::new(input, masks, policy)))
            }
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let node = if let Some(layer) = node.downcast_ref::<LayerExec>() {
            let (keys, superseded, projection) = layer.parts();
            Node::Layer {
                keys: keys.to_vec(),
                superseded: superseded.map(key_list),
                projection: projection.to_vec(),
            }
        } else if let Some(mask) = node.downcast_ref::<MaskExec>() {
            let (input, masks, policy) = mask.parts();
            let input = proto_converter.execution_plan_to_proto(input, self)?;
            Node::Mask {
                masks: masks.clone(),
                allowed: policy.allowed().to_vec(),
                input: input.encode_to_vec(),
            }
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "{} cannot be sent to a worker",
                node.name()
            )));
        };
        serde_json::to_writer(buf, &node).map_err(encoding)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, _buf: &mut Vec<u8>) -> Result<()> {
        // Every other function is registered on the workers by name.
        match node.name() == PROFILE_ID {
            true => Err(DataFusionError::NotImplemented(format!(
                "{PROFILE_ID}() reads the front end's identifier index"
            ))),
            false => Ok(()),
        }
    }
}

fn key_list(keys: &KeySet) -> Vec<String> {
    let mut list: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    list.sort_unstable();
    list
}

/// The scan of files a masked scan hides, when it is one (an analyst's
/// read of a raw table): such a scan can be split over workers, each
/// part masked where it is read.
fn masked_file_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<(&MaskExec, &FileScanConfig)> {
    let mask = plan.downcast_ref::<MaskExec>()?;
    let (input, _, _) = mask.parts();
    let scan = input
        .downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()?;
    scan.output_partitioning.is_none().then_some((mask, scan))
}

/// The bytes of files the masked scan `plan` reads, if it is one that
/// can be split.
pub fn masked_scan_bytes(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    let (_, scan) = masked_file_scan(plan)?;
    Some(
        scan.file_groups
            .iter()
            .flat_map(|group| group.files())
            .map(|file| file.effective_size() as usize)
            .sum(),
    )
}

/// The masked scan `plan` cut into `tasks` masked scans, each of a share
/// of its files (byte ranges of large ones): the same masks on each, so
/// every part is masked on the worker that reads it.
pub fn split_masked_scan(
    plan: &Arc<dyn ExecutionPlan>,
    tasks: usize,
) -> Option<Vec<Arc<dyn ExecutionPlan>>> {
    let (mask, scan) = masked_file_scan(plan)?;
    let tasks = tasks.max(1);
    let partitions = plan.output_partitioning().partition_count();
    let groups = FileGroupPartitioner::new()
        .with_target_partitions(partitions * tasks)
        .with_repartition_file_min_size(0)
        .with_preserve_order_within_groups(!scan.output_ordering.is_empty())
        .repartition_file_groups(&scan.file_groups)
        .unwrap_or_else(|| scan.file_groups.clone());
    let mut template = scan.clone();
    template.file_groups.clear();
    let mut scans = vec![template; tasks];
    for (i, group) in groups.into_iter().enumerate() {
        scans[i % tasks].file_groups.push(group);
    }
    let (_, masks, policy) = mask.parts();
    Some(
        scans
            .into_iter()
            .map(|scan| {
                let input: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(scan);
                Arc::new(MaskExec::new(input, masks.clone(), Arc::clone(policy)))
                    as Arc<dyn ExecutionPlan>
            })
            .collect(),
    )
}

/// Whether `plan` can be sent to a worker: it encodes, every node of it
/// being DataFusion's or one [`PlanCodec`] carries; if not, why.
pub fn shippable(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(
        Arc::clone(plan),
        &PlanCodec,
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::SessionContext;
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };

    /// Two rows of (customer_id, email, properties).
    fn rows() -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("email", DataType::Utf8, true),
            Field::new("properties", DataType::Utf8, true),
        ]));
        let column = |v: [&str; 2]| Arc::new(StringArray::from(v.to_vec())) as _;
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                column(["C1", "C2"]),
                column(["ada@example.com", "bob@example.com"]),
                column([r#"{"sku":"s1","mobile":"0612"}"#, r#"{"sku":"s2"}"#]),
            ],
        )
        .unwrap();
        MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None).unwrap()
    }

    /// `plan` encoded with [`PlanCodec`] and decoded again, as a worker
    /// decodes it.
    fn travelled(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let ctx = SessionContext::new();
        let bytes = physical_plan_to_bytes_with_extension_codec(plan, &PlanCodec).unwrap();
        physical_plan_from_bytes_with_extension_codec(&bytes, &ctx.task_ctx(), &PlanCodec).unwrap()
    }

    async fn texts(plan: Arc<dyn ExecutionPlan>, column: usize) -> Vec<String> {
        let batches = collect(plan, SessionContext::new().task_ctx())
            .await
            .unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let c = b.column(column).as_string::<i32>();
                (0..c.len())
                    .map(|i| c.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_masked_scan_is_masked_on_the_worker_that_decodes_it() {
        let masks = vec![None, Some(Mask::Whole), Some(Mask::Json)];
        let policy = Arc::new(MaskPolicy::default());
        let plan: Arc<dyn ExecutionPlan> = Arc::new(MaskExec::new(rows(), masks, policy));
        let decoded = travelled(Arc::clone(&plan));
        assert_eq!(
            displayable(decoded.as_ref()).indent(true).to_string(),
            displayable(plan.as_ref()).indent(true).to_string()
        );
        assert_eq!(texts(Arc::clone(&decoded), 0).await, ["C1", "C2"]);
        assert_eq!(texts(Arc::clone(&decoded), 1).await, ["***", "***"]);
        assert_eq!(
            texts(decoded, 2).await,
            [r#"{"mobile":"***","sku":"s1"}"#, r#"{"sku":"s2"}"#]
        );
    }

    #[tokio::test]
    async fn a_layer_drops_the_same_superseded_rows_after_the_trip() {
        let superseded: KeySet = ["C1".into()].into_iter().collect();
        let plan: Arc<dyn ExecutionPlan> = Arc::new(
            LayerExec::try_new(rows(), vec![0], Some(Arc::new(superseded)), vec![0, 1]).unwrap(),
        );
        let decoded = travelled(plan);
        assert_eq!(texts(Arc::clone(&decoded), 0).await, ["C2"]);
        assert_eq!(texts(decoded, 1).await, ["bob@example.com"]);
    }

    #[test]
    fn what_cannot_travel_is_refused_at_encoding() {
        // A node the codec does not know: the query stays on the front end.
        let plan: Arc<dyn ExecutionPlan> = Arc::new(
            datafusion::physical_plan::empty::EmptyExec::new(rows().schema()),
        );
        assert!(shippable(&plan).is_ok(), "DataFusion's own nodes travel");
        let lookup: Arc<dyn ExecutionPlan> =
            Arc::new(super::super::lookup_exec::LookupExec::new(rows(), 2));
        let refused = shippable(&lookup).unwrap_err().to_string();
        assert!(refused.contains("cannot be sent to a worker"), "{refused}");
    }
}
