//! The server as a library: what `panorama serve` runs once its lake is
//! ready — the SQL sessions of both roles, the query runtime, the
//! PostgreSQL endpoint, the scheduled jobs, the HTTP collector and the web
//! console — started by [`Server::builder`]`(…).start()` and stopped through
//! the [`Running`] handle it returns (as mini-redis' and InfluxDB's server
//! builders do). `main.rs` parses flags, prepares the lake (seed, first
//! refresh, interrupted work) and calls this; the tests start this very
//! server. Every refusal (no users on a public address, an unreadable TLS
//! key, an address in use) comes back before anything listens.

use std::net::SocketAddr;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::tokio::TlsAcceptor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::engine::{self, EngineOptions};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::pgwire::{self, Actions};

/// Start here: [`Server::builder`].
pub struct Server;

impl Server {
    /// A server over `lake` with `config` (`panorama.toml`): the PostgreSQL
    /// endpoint on 127.0.0.1 on a port the system picks, the collector,
    /// console and jobs as `config` says, `REFRESH MATERIALIZED VIEW` and
    /// `CALL` wired to the lake.
    pub fn builder(lake: Lake, config: Config) -> Builder {
        let engine = config.engine_options();
        Builder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            engine,
            actions: None,
            jobs: true,
            lake,
            config,
            checked_tls: None,
        }
    }
}

/// What to start; [`Builder::start`] starts it.
pub struct Builder {
    lake: Lake,
    config: Config,
    listen: SocketAddr,
    engine: EngineOptions,
    actions: Option<Actions>,
    jobs: bool,
    /// The TLS acceptor [`Builder::check`] loaded, kept for
    /// [`Builder::start`] (the key is read once).
    checked_tls: Option<TlsAcceptor>,
}

impl Builder {
    /// The PostgreSQL endpoint's address (port 0: the system picks one).
    pub fn listen(mut self, addr: SocketAddr) -> Builder {
        self.listen = addr;
        self
    }

    /// Engine settings (memory limit, partitions); the identity, lookup and
    /// masking settings come from the configuration unless set here.
    pub fn engine(mut self, options: EngineOptions) -> Builder {
        self.engine = options;
        self
    }

    /// What `REFRESH MATERIALIZED VIEW cdp.*` and `CALL` do, instead of a
    /// refresh of the lake at the time of the call and Panorama's
    /// procedures.
    pub fn actions(mut self, actions: Actions) -> Builder {
        self.actions = Some(actions);
        self
    }

    /// Run the lake's scheduled jobs (the default).
    pub fn jobs(mut self, run: bool) -> Builder {
        self.jobs = run;
        self
    }

    /// Refuse now what [`Builder::start`] would refuse (no users on a
    /// public address, an unreadable TLS key), so a caller can check
    /// before long preparations.
    pub fn check(&mut self) -> Result<()> {
        let (_, tls) = self.refusals()?;
        self.checked_tls = tls;
        Ok(())
    }

    /// The users and the TLS acceptor, or why the server must not start.
    fn refusals(&self) -> Result<(pgwire::auth::Users, Option<TlsAcceptor>)> {
        let config = &self.config;
        // The sources' tables, now that the lake's own are known.
        config.identity.validate()?;
        let users = pgwire::auth::Users::from_config(&config.users).map_err(Error::Config)?;
        let public = [
            Some(self.listen),
            config.console.enabled.then_some(config.console.listen),
        ];
        if let Some(listen) = public.into_iter().flatten().find(|a| !a.ip().is_loopback())
            && users.is_empty()
        {
            return Err(Error::Config(format!(
                "refusing to listen on {listen} without authentication: anyone who can reach \
                 it would read every profile. Add [[users]] to panorama.toml (`panorama \
                 passwd` makes a password verifier) or listen on 127.0.0.1"
            )));
        }
        let tls = match &config.tls {
            Some(_) if self.checked_tls.is_some() => self.checked_tls.clone(),
            Some(tls) => Some(pgwire::tls::acceptor(tls).map_err(|e| {
                Error::Config(format!(
                    "loading [tls]: {e} (the server does not start without it)"
                ))
            })?),
            None => None,
        };
        Ok((users, tls))
    }

    /// Check everything that can be refused, then start every part and
    /// serve until [`Running::stop`].
    pub async fn start(self) -> Result<Running> {
        let (users, tls) = self.refusals()?;
        let Builder {
            lake,
            config,
            listen,
            engine: options,
            actions,
            jobs,
            checked_tls: _,
        } = self;
        let admin = Arc::new(engine::session(&lake, &options)?);
        let analyst = Arc::new(engine::analyst_session(&lake, &options, &admin)?);
        let listener = bind(listen, "the PostgreSQL endpoint").await?;
        let addr = listener.local_addr().unwrap_or(listen);
        // Queries run on their own runtime, so a heavy one never holds up
        // the protocol (logins, cancels, other clients' small queries).
        let queries = crate::executor::QueryRuntime::new()
            .map_err(|e| Error::Internal(format!("starting the query runtime: {e}")))?;
        let collector = start_collector(&lake, &config).await?;
        let console = start_console(
            &lake,
            &config,
            (Arc::clone(&admin), Arc::clone(&analyst)),
            users.clone(),
            collector.as_ref(),
        )
        .await?;
        let jobs = match jobs {
            true => Some(start_jobs(&lake, &config, &admin).await?),
            false => None,
        };
        let actions = actions.unwrap_or_else(|| lake_actions(&lake, &config));
        let access = pgwire::Access {
            users,
            analyst: Some(analyst),
            tls_required: config.tls.as_ref().is_some_and(|t| t.require),
            tls,
            query_runtime: Some(queries.handle()),
        };
        let (console_addr, collector_addr) = (
            console.as_ref().map(|c| c.addr),
            collector.as_ref().map(|c| c.addr()),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let served = pgwire::serve(listener, admin, actions, access, shutdown).await;
            stop_parts(console, jobs, collector).await;
            drop(queries);
            served.map_err(|e| Error::Internal(format!("serving the PostgreSQL protocol: {e}")))
        });
        Ok(Running {
            addr,
            console: console_addr,
            collector: collector_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A started server. Dropping it stops the server without waiting;
/// [`Running::stop`] waits until every part has stopped.
pub struct Running {
    /// Where the PostgreSQL endpoint listens.
    pub addr: SocketAddr,
    /// Where the web console and profile API listen, if they run.
    pub console: Option<SocketAddr>,
    /// Where the HTTP collector listens, if it runs.
    pub collector: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl Running {
    /// Stop accepting, let open connections end, stop the console, the
    /// jobs and the collector (its log flushed into `raw.events`).
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::Internal(format!("the server stopped: {e}")))?,
            None => Ok(()),
        }
    }

    /// Serve until `signal` resolves (Ctrl-C for `panorama serve`), then
    /// [`Running::stop`].
    pub async fn until(self, signal: impl std::future::Future<Output = ()>) -> Result<()> {
        signal.await;
        self.stop().await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("{what} cannot listen on {addr}: {e}")))
}

/// `REFRESH MATERIALIZED VIEW cdp.*`: an incremental refresh now; `CALL
/// panorama.forget(…)` and the link procedures.
fn lake_actions(lake: &Lake, config: &Config) -> Actions {
    let refresh: pgwire::AdminAction = {
        let (lake, identity) = (lake.clone(), config.identity.clone());
        Arc::new(move || {
            let (lake, identity) = (lake.clone(), identity.clone());
            Box::pin(async move {
                let mode = crate::identity::Mode::Incremental;
                crate::identity::refresh(&lake, &identity, mode, chrono::Utc::now(), |_| {})
                    .await
                    .map(|r| {
                        format!(
                            "version {}: {} profiles, {} merges",
                            r.version, r.profiles, r.merges
                        )
                    })
            })
        })
    };
    let call: pgwire::CallAction = {
        let (lake, identity) = (lake.clone(), config.identity.clone());
        Arc::new(move |procedure, args| {
            let (lake, identity) = (lake.clone(), identity.clone());
            Box::pin(async move {
                if procedure == "forget" {
                    return forget(&lake, &identity, &args).await;
                }
                use crate::identity::blocks;
                let decision = blocks::procedure(&identity, &procedure, &args)?;
                blocks::record(&lake, &decision, chrono::Utc::now()).await?;
                Ok(blocks::describe(&decision))
            })
        })
    };
    Actions {
        refresh: Some(refresh),
        call: Some(call),
    }
}

/// `CALL panorama.forget('email', 'jane@example.com', …)`: an erasure
/// request; the answer holds counts only.
async fn forget(
    lake: &Lake,
    identity: &crate::identity::IdentityConfig,
    args: &[String],
) -> Result<String> {
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return Err(Error::Input(
            "forget takes pairs of identifier type and value: CALL panorama.forget('email', 'jane@example.com')"
                .into(),
        ));
    }
    let requested: Vec<(String, String)> = args
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    let options = crate::privacy::ForgetOptions::default();
    let done = crate::privacy::forget(lake, identity, &requested, options, |_| {}).await?;
    Ok(format!(
        "request {}: {} identifiers of {} profiles erased, {} rows removed",
        done.request_id,
        done.identifiers,
        done.profiles,
        done.rows()
    ))
}

/// The scheduled jobs, and what stops them.
struct Jobs {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start_jobs(lake: &Lake, config: &Config, ctx: &Arc<SessionContext>) -> Result<Jobs> {
    let all = crate::jobs::load(lake).await?;
    tracing::info!(
        jobs = all.len(),
        "scheduling jobs (`panorama jobs` lists them)"
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::jobs::scheduler::run_forever(
        Arc::clone(ctx),
        lake.clone(),
        config.identity.clone(),
        all,
        async {
            let _ = stopped.await;
        },
    ));
    Ok(Jobs { stop, task })
}

/// Start the HTTP collector unless `[collector] enabled = false`.
async fn start_collector(
    lake: &Lake,
    config: &Config,
) -> Result<Option<crate::collect::Collector>> {
    let mut collector = config.collector.clone();
    if !collector.enabled {
        return Ok(None);
    }
    collector.identity = config.identity.clone();
    let any_key = collector.write_keys.is_empty();
    let collector = crate::collect::Collector::start(lake.clone(), collector).await?;
    tracing::info!(
        "collector ready: Segment-compatible HTTP API at http://{}/v1/ ({})",
        collector.addr(),
        if any_key {
            "any write key accepted: set [collector] write_keys in panorama.toml"
        } else {
            "write keys from panorama.toml"
        }
    );
    Ok(Some(collector))
}

/// The running console: its address, what stops it, and its task.
struct Console {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Start the web console and profile API unless `[console] enabled =
/// false` (a public address without users was refused before).
async fn start_console(
    lake: &Lake,
    config: &Config,
    (admin, analyst): (Arc<SessionContext>, Arc<SessionContext>),
    users: pgwire::auth::Users,
    collector: Option<&crate::collect::Collector>,
) -> Result<Option<Console>> {
    let settings = &config.console;
    if !settings.enabled {
        return Ok(None);
    }
    let listen = settings.listen;
    let mut console = crate::console::Console::new(
        lake.clone(),
        config.identity.clone(),
        admin,
        analyst,
        users,
        settings,
    );
    if let Some(collector) = collector {
        console = console.with_collector(collector.recent(), collector.stats_handle());
    }
    let listener = bind(listen, "the console").await?;
    let addr = listener.local_addr().unwrap_or(listen);
    tracing::info!(
        "console ready: http://{addr}/ (profile API: http://{addr}/api/v1/profiles/<id_type>/<value>)"
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::console::serve(listener, Arc::new(console), async {
        let _ = stopped.await;
    }));
    Ok(Some(Console { addr, stop, task }))
}

/// Stop the console, then the jobs, then the collector (its log flushed).
async fn stop_parts(
    console: Option<Console>,
    jobs: Option<Jobs>,
    collector: Option<crate::collect::Collector>,
) {
    if let Some(console) = console {
        let _ = console.stop.send(());
        let _ = console.task.await;
    }
    if let Some(jobs) = jobs {
        let _ = jobs.stop.send(());
        let _ = jobs.task.await;
    }
    if let Some(collector) = collector {
        match collector.shutdown().await {
            Ok(flushed) => tracing::info!(
                events = flushed.events,
                "collector stopped; its log is flushed into raw.events"
            ),
            Err(e) => tracing::warn!(
                "collector stopped; its log could not be flushed and will be at the next start: {e}"
            ),
        }
    }
}
