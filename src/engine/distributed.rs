//! Running a query on the cluster's workers when that pays, with
//! datafusion-distributed: its planner cuts a plan into stages at the
//! shuffles and sends each stage's tasks to the workers (`panorama
//! worker`, [`crate::cluster`]); a plan with no stage worth sending (a
//! point lookup, a catalog query, `SELECT 1`) runs here unchanged.
//!
//! Two rules are Panorama's: a plan that cannot leave this process (see
//! [`codec::shippable`]) runs here whole, and so does every plan while no
//! worker answers. Workers are probed every [`PROBE`]; one that stops
//! answering gets no new task until it answers again. A plain `EXPLAIN`
//! of a distributed query shows its stages and tasks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, HashMap, Result};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{
    ExplainFormat, LogicalPlan, PlanType, StringifiedPlan, ToStringifiedPlan,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::explain::ExplainExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_distributed::grpc::{BoxCloneSyncChannel, create_worker_client};
use datafusion_distributed::{
    ChannelResolver, CoordinatorToWorkerMsg, DesiredTaskCountEvent, DesiredTaskCountEventResponse,
    DesiredTaskCountHandler, DistributedExec, DistributedExt, DistributedLeafExec,
    ExecuteTaskRequest, GetWorkerInfoRequest, GetWorkerInfoResponse, ScaleUpLeafNodeEvent,
    ScaleUpLeafNodeEventResponse, SessionStateBuilderExt, SetPlanRequest, WorkerChannel,
    WorkerResolver, WorkerToCoordinatorMsg, display_plan_ascii,
};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use tonic::transport::Endpoint;
use url::Url;

use crate::catalog::codec::{self, PlanCodec};
use crate::error::{Error, Result as PanoramaResult};

/// How often each worker is probed.
pub const PROBE: Duration = Duration::from_secs(1);

/// The cluster a front end sends work to.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The workers, as `host:port` (or URLs); none: every query runs here.
    pub workers: Vec<String>,
    /// Bytes of files one task scans: a scan of fewer bytes is one task,
    /// and a plan of one-task stages runs here.
    pub bytes_per_task: usize,
    /// The secret the workers were started with: sent with every task,
    /// a worker refuses tasks without it.
    pub secret: Option<String>,
    /// The workers' connections and prober, made by the first session
    /// built with these options and shared by the others (the admin's and
    /// the analysts' sessions probe and connect once, not once each).
    pub connections: Arc<std::sync::OnceLock<Workers>>,
}

/// The header carrying [`ClusterOptions::secret`] to the workers.
pub const SECRET_HEADER: &str = "x-panorama-cluster-secret";

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            workers: Vec::new(),
            bytes_per_task: 64 << 20,
            secret: None,
            connections: Arc::default(),
        }
    }
}

/// `builder` planning over the cluster of `options`.
pub(super) fn distribute(
    builder: SessionStateBuilder,
    options: &ClusterOptions,
) -> PanoramaResult<SessionStateBuilder> {
    let workers = match options.connections.get() {
        Some(workers) => workers.clone(),
        None => {
            let workers = Workers::new(&options.workers)?;
            // A session built meanwhile may have set its own: use that one.
            options.connections.get_or_init(|| workers).clone()
        }
    };
    let mut builder = builder
        .with_query_planner(Arc::new(Replay))
        .with_distributed_planner()
        .with_distributed_worker_resolver(workers.clone())
        .with_distributed_channel_resolver(workers.clone())
        .with_distributed_user_codec(PlanCodec)
        .with_distributed_desired_task_count_handler(MaskedTasks {
            bytes_per_task: options.bytes_per_task.max(1),
        })
        .with_distributed_scale_up_leaf_node_handler(split_masked)
        .with_distributed_file_scan_config_bytes_per_partition(options.bytes_per_task.max(1))?;
    if let Some(secret) = &options.secret {
        let mut headers = http::HeaderMap::new();
        let value = http::HeaderValue::from_str(secret)
            .map_err(|_| Error::Config("the cluster secret must be printable ASCII".into()))?;
        headers.insert(SECRET_HEADER, value);
        builder = builder.with_distributed_passthrough_headers(headers)?;
    }
    let distributed = builder
        .query_planner()
        .take()
        .ok_or_else(|| Error::Internal("the distributed planner is missing".into()))?;
    Ok(builder.with_query_planner(Arc::new(Routed {
        distributed,
        workers,
    })))
}

/// The workers: their addresses, which answer, and one connection each.
#[derive(Clone)]
pub struct Workers(Arc<Members>);

struct Members {
    urls: Vec<Url>,
    /// Per worker: it did not answer the last probe or connection.
    down: Vec<AtomicBool>,
    channels: tokio::sync::Mutex<HashMap<Url, BoxCloneSyncChannel>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.urls.iter().map(Url::as_str))
            .finish()
    }
}

impl Workers {
    /// The workers at `addresses` (`host:port` or `http://host:port`),
    /// probed in the background while they are in use.
    pub fn new(addresses: &[String]) -> PanoramaResult<Workers> {
        let urls = addresses
            .iter()
            .map(|a| worker_url(a))
            .collect::<PanoramaResult<Vec<Url>>>()?;
        let members = Arc::new(Members {
            down: urls.iter().map(|_| AtomicBool::new(false)).collect(),
            urls,
            channels: Default::default(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(probe(Arc::downgrade(&members)));
        }
        Ok(Workers(members))
    }

    /// The workers answering now.
    pub fn live(&self) -> Vec<Url> {
        let m = &self.0;
        m.urls
            .iter()
            .zip(&m.down)
            .filter(|(_, down)| !down.load(Ordering::Relaxed))
            .map(|(url, _)| url.clone())
            .collect()
    }

    fn mark(&self, url: &Url, down: bool) {
        if let Some(i) = self.0.urls.iter().position(|u| u == url) {
            let was = self.0.down[i].swap(down, Ordering::Relaxed);
            if was != down {
                match down {
                    true => tracing::warn!(worker = %url, "a worker stopped answering"),
                    false => tracing::info!(worker = %url, "a worker answers"),
                }
            }
        }
    }

    async fn channel(&self, url: &Url) -> Result<BoxCloneSyncChannel> {
        let mut channels = self.0.channels.lock().await;
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let unreachable = |e: tonic::transport::Error| {
            DataFusionError::Execution(format!("worker {url} does not answer: {e}"))
        };
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(unreachable)?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(unreachable)?;
        let channel = BoxCloneSyncChannel::new(channel);
        channels.insert(url.clone(), channel.clone());
        Ok(channel)
    }
}

/// `host:port` as a worker's URL.
fn worker_url(address: &str) -> PanoramaResult<Url> {
    let text = match address.contains("://") {
        true => address.to_string(),
        false => format!("http://{address}"),
    };
    Url::parse(&text)
        .ok()
        .filter(|u| u.host_str().is_some() && u.port_or_known_default().is_some())
        .ok_or_else(|| {
            Error::Config(format!(
                "worker address '{address}' is not host:port (as in 10.0.0.7:7077)"
            ))
        })
}

/// Probe every worker each [`PROBE`] (a TCP connection), while `members`
/// is in use.
async fn probe(members: Weak<Members>) {
    loop {
        let Some(m) = members.upgrade() else { return };
        let workers = Workers(m);
        for url in workers.0.urls.clone() {
            let address = (
                url.host_str().unwrap_or_default().to_string(),
                url.port_or_known_default().unwrap_or(80),
            );
            let answered = tokio::time::timeout(PROBE, tokio::net::TcpStream::connect(address))
                .await
                .is_ok_and(|c| c.is_ok());
            workers.mark(&url, !answered);
        }
        drop(workers);
        tokio::time::sleep(PROBE).await;
    }
}

impl WorkerResolver for Workers {
    fn get_urls(&self) -> Result<Vec<Url>> {
        match self.live() {
            live if live.is_empty() => Err(DataFusionError::Execution(
                "no worker of the cluster answers".into(),
            )),
            live => Ok(live),
        }
    }
}

#[async_trait]
impl ChannelResolver for Workers {
    async fn get_worker_client_for_url(&self, url: &Url) -> Result<Box<dyn WorkerChannel>> {
        match self.channel(url).await {
            Ok(channel) => Ok(Box::new(Named {
                url: url.clone(),
                workers: self.clone(),
                inner: create_worker_client(channel),
            })),
            Err(e) => {
                self.mark(url, true);
                Err(e)
            }
        }
    }
}

/// A worker stopped answering while a query read from it: the query is
/// stopped (SQLSTATE 58000, a system error), nothing is retried.
#[derive(Debug, thiserror::Error)]
#[error(
    "a worker of the cluster stopped answering (seen from {url}: {detail}); the query was \
     stopped, run it again"
)]
pub struct WorkerLost {
    /// The worker the front end was reading from (the lost one, or one
    /// that was reading from it).
    pub url: String,
    /// The connection's failure, as gRPC reported it.
    pub detail: String,
}

/// What failed when a connection to a worker failed under `e`, wherever
/// it sits (the error may have crossed a stream or a shared future): the
/// gRPC status here, or one a worker met reading from another worker and
/// sent on as text (datafusion-distributed carries an external error as
/// its text; tonic writes a status as `code: '…', message: …`).
fn transport_failure(e: &DataFusionError) -> Option<String> {
    match e {
        DataFusionError::External(inner) => match inner.downcast_ref::<tonic::Status>() {
            Some(status) => Some(format!("{}: {}", status.code(), status.message())),
            None => match inner.downcast_ref::<DataFusionError>() {
                Some(inner) => transport_failure(inner),
                None => {
                    let text = inner.to_string();
                    text.starts_with("code: '").then_some(text)
                }
            },
        },
        DataFusionError::Context(_, inner) => transport_failure(inner),
        DataFusionError::Shared(inner) => transport_failure(inner),
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            datafusion::arrow::error::ArrowError::ExternalError(inner) => inner
                .downcast_ref::<DataFusionError>()
                .and_then(transport_failure),
            _ => None,
        },
        _ => None,
    }
}

/// A worker's channel whose transport errors name the worker (errors
/// its tasks raise come back as they were raised, as on one machine).
struct Named {
    url: Url,
    workers: Workers,
    inner: Box<dyn WorkerChannel>,
}

impl Named {
    /// `e`, or, when the connection to a worker failed under it, an error
    /// saying so. The worker read from is then taken off until a probe
    /// finds it answering (a live one is back within a second).
    fn lost(url: &Url, workers: &Workers, e: DataFusionError) -> DataFusionError {
        let Some(detail) = transport_failure(&e) else {
            return e;
        };
        workers.mark(url, true);
        DataFusionError::External(Box::new(WorkerLost {
            url: url.to_string(),
            detail,
        }))
    }

    fn naming<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, Result<T>>,
    ) -> BoxStream<'static, Result<T>> {
        let (url, workers) = (self.url.clone(), self.workers.clone());
        stream
            .map_err(move |e| Named::lost(&url, &workers, e))
            .boxed()
    }
}

#[async_trait]
impl WorkerChannel for Named {
    async fn coordinator_channel(
        &mut self,
        headers: http::HeaderMap,
        set_plan_request: SetPlanRequest,
        c2w_stream: BoxStream<'static, CoordinatorToWorkerMsg>,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<BoxStream<'static, Result<WorkerToCoordinatorMsg>>> {
        let stream = self
            .inner
            .coordinator_channel(headers, set_plan_request, c2w_stream, metrics, task_ctx)
            .await
            .map_err(|e| Named::lost(&self.url, &self.workers, e))?;
        Ok(self.naming(stream))
    }

    async fn execute_task(
        &mut self,
        headers: http::HeaderMap,
        request: ExecuteTaskRequest,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<Vec<BoxStream<'static, Result<RecordBatch>>>> {
        let streams = self
            .inner
            .execute_task(headers, request, metrics, task_ctx)
            .await
            .map_err(|e| Named::lost(&self.url, &self.workers, e))?;
        Ok(streams.into_iter().map(|s| self.naming(s)).collect())
    }

    async fn get_worker_info(
        &mut self,
        request: GetWorkerInfoRequest,
    ) -> Result<GetWorkerInfoResponse> {
        self.inner
            .get_worker_info(request)
            .await
            .map_err(|e| Named::lost(&self.url, &self.workers, e))
    }
}

/// A masked scan of files (an analyst's read of a raw table) asks for
/// tasks as the scan it hides would.
struct MaskedTasks {
    bytes_per_task: usize,
}

#[async_trait]
impl DesiredTaskCountHandler for MaskedTasks {
    async fn handle(
        &self,
        event: DesiredTaskCountEvent<'_>,
    ) -> Option<Result<DesiredTaskCountEventResponse>> {
        let bytes = codec::masked_scan_bytes(event.plan)?;
        let tasks = bytes
            .div_ceil(self.bytes_per_task)
            .div_ceil(event.session_config.target_partitions().max(1));
        Some(Ok(DesiredTaskCountEventResponse::desired(tasks)))
    }
}

/// A masked scan of files split into its tasks' parts, each masked.
fn split_masked(event: ScaleUpLeafNodeEvent<'_>) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    let parts = codec::split_masked_scan(event.plan, event.task_count)?;
    Some(
        DistributedLeafExec::try_new(Arc::clone(event.plan), parts)
            .map(|leaf| ScaleUpLeafNodeEventResponse::new(Arc::new(leaf))),
    )
}

tokio::task_local! {
    /// The plan [`Routed`] made, for the distributed planner to cut.
    static PLANNED: Arc<dyn ExecutionPlan>;
}

/// The distributed planner's own planner: the plan [`Routed`] already
/// made (planned once), else DataFusion's.
#[derive(Debug)]
struct Replay;

#[async_trait]
impl QueryPlanner for Replay {
    async fn create_physical_plan(
        &self,
        logical: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match PLANNED.try_with(Arc::clone) {
            Ok(plan) => Ok(plan),
            Err(_) => {
                DefaultPhysicalPlanner::default()
                    .create_physical_plan(logical, session)
                    .await
            }
        }
    }
}

/// Plans here, then hands a plan that can travel to the distributed
/// planner while a worker answers.
struct Routed {
    distributed: Arc<dyn QueryPlanner + Send + Sync>,
    workers: Workers,
}

impl std::fmt::Debug for Routed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routed")
            .field("workers", &self.workers)
            .finish()
    }
}

#[async_trait]
impl QueryPlanner for Routed {
    async fn create_physical_plan(
        &self,
        logical: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let LogicalPlan::Explain(explain) = logical
            && explain.explain_format == ExplainFormat::Indent
            && !explain.verbose
            && explain.logical_optimization_succeeded
        {
            let plan = Box::pin(self.create_physical_plan(&explain.plan, session)).await?;
            if plan.downcast_ref::<DistributedExec>().is_some() {
                let plans = vec![
                    explain.plan.to_stringified(PlanType::FinalLogicalPlan),
                    StringifiedPlan::new(
                        PlanType::FinalPhysicalPlan,
                        display_plan_ascii(plan.as_ref(), false),
                    ),
                ];
                let schema = Arc::clone(explain.schema.inner());
                return Ok(Arc::new(ExplainExec::new(schema, plans, false)));
            }
        }
        let local = DefaultPhysicalPlanner::default()
            .create_physical_plan(logical, session)
            .await?;
        if is_catalog_only(&local) {
            return Ok(local);
        }
        if self.workers.live().is_empty() {
            tracing::debug!("no worker answers: the query runs here");
            return Ok(local);
        }
        if let Err(e) = codec::shippable(&local) {
            // The encoder's message may quote an expression: values out.
            let why = crate::redact::values(&e.to_string());
            tracing::debug!("the query runs here: {why}");
            return Ok(local);
        }
        PLANNED
            .scope(
                local,
                self.distributed.create_physical_plan(logical, session),
            )
            .await
    }
}

/// Whether `plan` scans no file (no work a worker could share).
fn is_catalog_only(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut files = false;
    // The closure never fails.
    let _ = plan.apply(|node| {
        files = node
            .downcast_ref::<DataSourceExec>()
            .is_some_and(|scan| scan.data_source().is::<FileScanConfig>())
            || codec::masked_scan_bytes(node).is_some();
        Ok(match files {
            true => TreeNodeRecursion::Stop,
            false => TreeNodeRecursion::Continue,
        })
    });
    !files
}
