//! `panorama worker`: one machine of a cluster. It runs the tasks a front
//! end's distributed planner sends it ([`crate::engine::distributed`]) —
//! datafusion-distributed's worker service over gRPC — with the same
//! functions, table formats and masking as the front end: its sessions
//! are built from the engine's, so nothing is registered by hand. It
//! reads the lake directly (its object store), never through the front
//! end.
//!
//! A worker runs any plan it is sent, so one on a non-loopback address
//! needs the cluster's secret, and refuses tasks that do not carry it.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion_distributed::{
    DistributedExt, Worker, WorkerPlanRewriteEvent, WorkerPlanRewriteEventResponse,
    WorkerPlanRewriteHandler, WorkerQueryContext, WorkerSessionBuilder,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::catalog::codec::PlanCodec;
use crate::catalog::parquet_format;
use crate::engine::distributed::SECRET_HEADER;
use crate::engine::{self, EngineOptions};
use crate::error::{Error, Result};
use crate::lake::Lake;

/// A worker serving on [`RunningWorker::addr`] until stopped.
pub struct RunningWorker {
    /// The address it listens on (the port the system chose for port 0).
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
}

impl RunningWorker {
    /// Stop taking tasks and wait for the service to end.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        ended(self.task).await
    }

    /// Serve until the service ends (an error, or [`RunningWorker::stop`]).
    pub async fn until(self) -> Result<()> {
        // Held: dropping the sender would stop the service.
        let RunningWorker { stop, task, .. } = self;
        let ended = ended(task).await;
        drop(stop);
        ended
    }
}

/// How the worker service ended.
async fn ended(task: JoinHandle<std::result::Result<(), tonic::transport::Error>>) -> Result<()> {
    match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Internal(format!("the worker service stopped: {e}"))),
        Err(e) => Err(Error::Internal(format!("the worker service stopped: {e}"))),
    }
}

/// Start a worker over `lake` on `listen`, with the engine settings of
/// `options` (memory limit, partitions, identity rules, masking) and the
/// cluster's `secret` (required on a non-loopback address).
pub async fn start(
    lake: &Lake,
    options: &EngineOptions,
    listen: SocketAddr,
    secret: Option<String>,
) -> Result<RunningWorker> {
    if !listen.ip().is_loopback() && secret.is_none() {
        return Err(Error::Config(format!(
            "refusing to listen on {listen} without the cluster secret: a worker runs any \
             plan it is sent. Set [cluster] secret in panorama.toml (or \
             PANORAMA_CLUSTER_SECRET) on the workers and the front end, or listen on 127.0.0.1"
        )));
    }
    // The front end's session, whose functions and runtime (memory pool,
    // the lake's object store) every task's session shares.
    let local = EngineOptions {
        cluster: Default::default(),
        mask_personal_data: false,
        ..options.clone()
    };
    let template = engine::session(lake, &local)?;
    let state = template.state();
    let sessions = Sessions {
        scalar: state.scalar_functions().values().cloned().collect(),
        aggregate: state.aggregate_functions().values().cloned().collect(),
        window: state.window_functions().values().cloned().collect(),
        target_partitions: options.target_partitions,
        secret: secret.map(Arc::from),
        runtime: template.runtime_env(),
    };
    let worker = Worker::from_session_builder(sessions)
        .with_runtime_env(template.runtime_env())
        .with_version(env!("CARGO_PKG_VERSION"));
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Config(format!("the worker cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("the worker's address: {e}")))?;
    let (stop, stopped) = oneshot::channel::<()>();
    // No Nagle delay: a stage's small messages (plans, the last batch of a
    // stream) would otherwise wait for the peer's delayed acknowledgement.
    let incoming = TcpListenerStream::new(listener).map(|connection| {
        connection.and_then(|c| {
            c.set_nodelay(true)?;
            Ok(c)
        })
    });
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(worker.into_worker_server())
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, lake = %lake.url(), "worker ready");
    Ok(RunningWorker { addr, stop, task })
}

/// Parquet scans whose errors name their file, as on the front end.
fn name_files(runtime: Arc<RuntimeEnv>) -> impl WorkerPlanRewriteHandler {
    move |event: WorkerPlanRewriteEvent<'_>| {
        let plan = parquet_format::name_files_in(event.plan, &runtime)?;
        Ok(WorkerPlanRewriteEventResponse::new(plan))
    }
}

/// Builds each task's session: DataFusion's defaults plus Panorama's
/// functions and plan codec, after checking the cluster's secret.
#[derive(Clone)]
struct Sessions {
    scalar: Vec<Arc<ScalarUDF>>,
    aggregate: Vec<Arc<AggregateUDF>>,
    window: Vec<Arc<WindowUDF>>,
    target_partitions: usize,
    secret: Option<Arc<str>>,
    runtime: Arc<RuntimeEnv>,
}

#[async_trait]
impl WorkerSessionBuilder for Sessions {
    async fn build_session_state(
        &self,
        ctx: WorkerQueryContext,
    ) -> std::result::Result<SessionState, DataFusionError> {
        if let Some(secret) = &self.secret {
            let sent = ctx.headers.get(SECRET_HEADER).map(|v| v.as_bytes());
            if sent != Some(secret.as_bytes()) {
                return Err(DataFusionError::Execution(
                    "this worker refuses tasks without the cluster's secret".into(),
                ));
            }
        }
        let mut builder = ctx
            .builder
            .with_scalar_functions(self.scalar.clone())
            .with_aggregate_functions(self.aggregate.clone())
            .with_window_functions(self.window.clone())
            .with_distributed_user_codec(PlanCodec)
            .with_distributed_worker_plan_rewrite_handler(name_files(Arc::clone(&self.runtime)));
        if let Some(config) = builder.config().as_mut() {
            config.options_mut().execution.target_partitions = self.target_partitions;
        }
        Ok(builder.build())
    }
}
