//! Where query work runs: a dedicated runtime for the CPU-heavy part of
//! queries, apart from the runtime that accepts connections, speaks the
//! protocols and keeps time (as InfluxDB IOx's `DedicatedExecutor` does).
//!
//! DataFusion spawns a task per partition with `tokio::spawn`, onto
//! whichever runtime is current. [`QueryRuntime::run`] and
//! [`QueryRuntime::stream`] make the query runtime current while a query's
//! future or result stream is polled, so every task the query spawns lands
//! there, while the statement itself — its deadline, its cancel, the socket
//! — stays on the protocol runtime. The query runtime's threads run at a
//! lower scheduling priority (nice 10): when a heavy query keeps both cores
//! busy, a `SELECT 1` or a new login on the protocol runtime still gets a
//! core within milliseconds. A result stream is driven by a task on a
//! third, small pool of normal-priority "driver" threads: the partitions it
//! spawns still land on the query runtime, but a cheap query's stream is
//! never queued behind a heavy query's partition tasks. All these threads
//! have large stacks, so deeply nested SQL is planned without overflowing a
//! thread's stack. [`spawn_within`] plans a statement in a task of its own
//! and waits for it against a clock on a thread of its own, so a
//! `statement_timeout` fires on time even while planning computes for
//! seconds without yielding.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::runtime::{Handle, Runtime};

/// Stack of every thread that plans or runs queries: deeply nested SQL
/// recurses in the parser, the planner and the optimizer. Only the pages
/// touched are ever backed by memory.
pub const THREAD_STACK_BYTES: usize = 256 << 20;

/// Scheduling priority (nice) of the query threads: below the protocol's.
const QUERY_NICE: i32 = 10;

/// Threads that drive result streams: each polls one statement's plan
/// root (the partitions below it run on the query runtime), so a handful
/// serve many cheap statements while a few heavy single-partition ones run.
const DRIVER_THREADS: usize = 4;

/// Why [`spawn_within`] gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// The limit passed first; the task is aborted at its next yield.
    TimedOut,
    /// The query runtime is shutting down.
    Stopped,
}

/// The dedicated runtimes queries run on. Dropping it stops their threads
/// without waiting for them.
#[derive(Debug)]
pub struct QueryRuntime {
    runtimes: Vec<Runtime>,
    handle: QueryHandle,
}

/// Where a statement's work goes: `cpu` (nice 10, one worker per core) for
/// planning and partitions, `drivers` for the tasks that pull a result
/// stream and hand its rows to the protocol, `clock` (one thread that only
/// keeps time) for deadlines that must fire while every other thread
/// computes.
#[derive(Debug, Clone)]
pub struct QueryHandle {
    cpu: Handle,
    drivers: Handle,
    clock: Handle,
}

impl QueryRuntime {
    /// The query runtime (one worker per core) and its stream drivers.
    pub fn new() -> std::io::Result<QueryRuntime> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cpu = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("panorama-query")
            .thread_stack_size(THREAD_STACK_BYTES)
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        let drivers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(DRIVER_THREADS)
            .thread_name("panorama-rows")
            .thread_stack_size(THREAD_STACK_BYTES)
            .enable_all()
            .build()?;
        let clock = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("panorama-clock")
            .enable_time()
            .build()?;
        let handle = QueryHandle {
            cpu: cpu.handle().clone(),
            drivers: drivers.handle().clone(),
            clock: clock.handle().clone(),
        };
        Ok(QueryRuntime {
            runtimes: vec![cpu, drivers, clock],
            handle,
        })
    }

    /// The handle to give the protocol front end.
    pub fn handle(&self) -> QueryHandle {
        self.handle.clone()
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        for runtime in self.runtimes.drain(..) {
            runtime.shutdown_background();
        }
    }
}

/// Lower the calling thread's priority (Linux: nice applies per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` has no preconditions; `setpriority` on our own
    // thread id only changes this thread's scheduling priority.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, QUERY_NICE) != 0 {
            tracing::debug!("could not lower the query threads' priority");
        }
    }
}

/// Run `future` — the parsing and planning of a statement, which can take
/// seconds of one core for pathological SQL and cannot be interrupted — to
/// completion on the query runtime (when there is one): what it spawns runs
/// there, and on a multi-threaded protocol runtime the thread it blocks is
/// handed over (`block_in_place`), so the protocol's other connections are
/// served meanwhile.
pub async fn run<F: Future>(runtime: Option<&QueryHandle>, future: F) -> F::Output {
    let Some(QueryHandle { cpu: handle, .. }) = runtime else {
        return future.await;
    };
    let multi_threaded = Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded {
        tokio::task::block_in_place(|| handle.block_on(future))
    } else {
        OnRuntime {
            handle: Some(handle.clone()),
            inner: future,
        }
        .await
    }
}

/// Run `future` — the planning of a statement and the start of its
/// execution — on a thread of the drivers' blocking pool (normal priority,
/// never queued behind a heavy query's partitions; what it spawns lands on
/// the query runtime), and wait for it at most `limit`. The wait is kept by
/// the clock thread, so past the limit the caller gets
/// [`Unfinished::TimedOut`] at once even while the planning, or every query
/// thread, computes without yielding; the planning is then dropped at its
/// next yield (so is it when the caller drops the returned future). A panic
/// in it resumes in the caller, where the protocol contains it. Without a
/// query runtime, `future` runs here with a plain timeout.
pub async fn spawn_within<F>(
    runtime: Option<&QueryHandle>,
    limit: Option<std::time::Duration>,
    future: F,
) -> Result<F::Output, Unfinished>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Some(QueryHandle {
        cpu,
        drivers,
        clock,
    }) = runtime
    else {
        return match limit {
            Some(limit) => tokio::time::timeout(limit, future)
                .await
                .map_err(|_| Unfinished::TimedOut),
            None => Ok(future.await),
        };
    };
    // Dropped when this function returns or is dropped: the planning
    // stops at its next yield.
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cpu = cpu.clone();
    let task = drivers.spawn_blocking(move || {
        cpu.block_on(async move {
            tokio::select! {
                output = future => Some(output),
                _ = stopped => None,
            }
        })
    });
    let finished = async move {
        match task.await {
            Ok(Some(output)) => Ok(output),
            Ok(None) => Err(Unfinished::Stopped),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Unfinished::Stopped),
        }
    };
    let Some(limit) = limit else {
        return finished.await;
    };
    let alarm = clock.spawn(tokio::time::sleep(limit));
    let _silence = AbortOnDrop(alarm.abort_handle());
    tokio::select! {
        output = finished => output,
        _ = alarm => Err(Unfinished::TimedOut),
    }
}

/// `stream`, driven by a task of its own on a driver thread (when there is
/// a query runtime; what the stream spawns lands on the query runtime) and
/// handed over in chunks of what is ready. The caller's side only waits for
/// chunks, so a deadline or a cancel it selects on fires on time even while
/// an operator computes for seconds without yielding; the task is aborted
/// when the returned stream is dropped.
pub fn stream<T: Send + 'static>(
    runtime: Option<&QueryHandle>,
    stream: futures::stream::BoxStream<'static, T>,
) -> futures::stream::BoxStream<'static, T> {
    use futures::StreamExt;
    let Some(QueryHandle { cpu, drivers, .. }) = runtime else {
        return stream;
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<T>>(4);
    let stream = OnRuntime {
        handle: Some(cpu.clone()),
        inner: stream,
    };
    let task = drivers.spawn(async move {
        let mut chunks = stream.ready_chunks(1024);
        while let Some(chunk) = chunks.next().await {
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let aborts = AbortOnDrop(task.abort_handle());
    futures::stream::unfold((rx, aborts), |(mut rx, aborts)| async move {
        let chunk = rx.recv().await?;
        Some((futures::stream::iter(chunk), (rx, aborts)))
    })
    .flatten()
    .boxed()
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pin_project_lite::pin_project! {
    /// A future or stream polled inside another runtime's context.
    pub struct OnRuntime<T> {
        handle: Option<Handle>,
        #[pin]
        inner: T,
    }
}

impl<F: Future> Future for OnRuntime<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.handle.as_ref().map(Handle::enter);
        this.inner.poll(cx)
    }
}

impl<S: Stream> Stream for OnRuntime<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        let _entered = this.handle.as_ref().map(Handle::enter);
        this.inner.poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_spawned_inside_run_on_the_query_runtime() {
        let queries = QueryRuntime::new().expect("runtime");
        let protocol = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let handle = queries.handle();
        let names = protocol.block_on(run(Some(&handle), async {
            let spawned = tokio::spawn(async { std::thread::current().name().map(str::to_string) });
            let here = std::thread::current().name().map(str::to_string);
            (here, spawned.await.expect("task"))
        }));
        assert_ne!(names.0.as_deref(), Some("panorama-query"));
        assert_eq!(names.1.as_deref(), Some("panorama-query"));
    }

    /// Work that never yields: what planning a pathological statement is.
    async fn busy_for(duration: std::time::Duration) {
        let started = std::time::Instant::now();
        while started.elapsed() < duration {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_limit_fires_on_time_while_every_query_thread_computes_without_yielding() {
        use std::time::{Duration, Instant};
        let queries = QueryRuntime::new().expect("runtime");
        let handle = queries.handle();
        let protocol = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Both query threads taken by other statements' synchronous work,
        // and this statement's own planning never yielding either.
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        for _ in 0..workers {
            drop(handle.cpu.spawn(busy_for(Duration::from_secs(3))));
        }
        let started = Instant::now();
        let answer = protocol.block_on(spawn_within(
            Some(&handle),
            Some(Duration::from_millis(200)),
            busy_for(Duration::from_secs(3)),
        ));
        assert_eq!(answer, Err(Unfinished::TimedOut));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the limit fired after {:?}",
            started.elapsed()
        );
        // A cheap statement is planned at once meanwhile, not queued behind
        // the busy query threads.
        let started = Instant::now();
        let answer = protocol.block_on(spawn_within(Some(&handle), None, async {
            std::thread::current().name().map(str::to_string)
        }));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(answer.expect("answered").as_deref(), Some("panorama-rows"));
    }
}
