//! The one place that builds the DataFusion `SessionContext` Panorama runs
//! on: the lake's object store, the `panorama` catalog, PostgreSQL's
//! `pg_catalog` and functions (from `datafusion-pg-catalog`), and the
//! session settings (default schema, memory limit, no file-list cache so
//! newly landed files are seen at once); with workers, the planner that
//! sends a query's stages to them ([`distributed`]).

pub mod distributed;

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_postgres::auth::AuthManager;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;

use crate::analytics::AnalyticsSchema;
use crate::catalog::profile_index::ProfileIndexCache;
use crate::catalog::{self, CATALOG};
use crate::error::{Error, Result};
use crate::functions;
use crate::identity::IdentityConfig;
use crate::identity::normalize;
use crate::lake::Lake;

/// Settings of the query engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Memory the queries of this process may use together, in bytes.
    pub memory_limit: usize,
    /// Partitions a query is split into (defaults to the number of cores).
    pub target_partitions: usize,
    /// Identity settings (identifier types shape `cdp.profiles`).
    pub identity: IdentityConfig,
    /// Mask personal columns at every scan (the `analyst` role's session).
    pub mask_personal_data: bool,
    /// Raw-table key columns indexed for point lookups.
    pub lookup: crate::catalog::lookup::LookupConfig,
    /// What analysts may read inside JSON columns.
    pub masking: crate::catalog::masking::MaskingConfig,
    /// The identifiers of the committed profiles, in memory: one per
    /// process, shared by every session built with these options (the
    /// `resolved` schema and the profile API read it).
    pub profile_index: Arc<ProfileIndexCache>,
    /// The workers queries are sent to (none: every query runs here).
    pub cluster: distributed::ClusterOptions,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            memory_limit: 4 << 30,
            target_partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            identity: IdentityConfig::default(),
            mask_personal_data: false,
            lookup: Default::default(),
            masking: Default::default(),
            profile_index: Arc::default(),
            cluster: Default::default(),
        }
    }
}

/// Build a session over `lake` with every Panorama schema and function;
/// with `mask_personal_data`, the analysts' session (see [`analyst_session`]).
pub fn session(lake: &Lake, options: &EngineOptions) -> Result<SessionContext> {
    let admin = build(lake, options, None)?;
    if options.mask_personal_data {
        analyst_session(lake, options, &admin)
    } else {
        Ok(admin)
    }
}

/// The analysts' session beside `admin`: every table's personal columns
/// masked at the scan, and the `analytics` views run with their definer's
/// rights — planned over `admin`'s unmasked tables, their results masked
/// by lineage ([`catalog::lineage`]), so a view that joins on an email
/// still finds its rows and never shows the email. Both sessions share one
/// runtime, so their queries draw on one memory pool.
pub fn analyst_session(
    lake: &Lake,
    options: &EngineOptions,
    admin: &SessionContext,
) -> Result<SessionContext> {
    let ctx = build(lake, options, Some(admin.runtime_env()))?;
    let policy = Arc::new(catalog::masking::MaskPolicy::new(&options.masking));
    let catalog = ctx
        .catalog(CATALOG)
        .ok_or_else(|| Error::Internal("the panorama catalog is missing".into()))?;
    for name in ["raw", "cdp", "resolved", "system"] {
        if let Some(schema) = catalog.schema(name) {
            let masked = catalog::masking::MaskedSchema::new(schema, Arc::clone(&policy));
            catalog.register_schema(name, Arc::new(masked))?;
        }
    }
    let definer = AnalyticsSchema::new(
        lake.clone(),
        admin.state(),
        options.identity.consent.clone(),
    );
    let masked = catalog::masking::MaskedSchema::new(Arc::new(definer), policy);
    catalog.register_schema("analytics", Arc::new(masked))?;
    Ok(ctx)
}

fn build(
    lake: &Lake,
    options: &EngineOptions,
    runtime: Option<Arc<datafusion::execution::runtime_env::RuntimeEnv>>,
) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(CATALOG, "public")
        .with_create_default_catalog_and_schema(false)
        .with_target_partitions(options.target_partitions)
        .with_extension(Arc::new(catalog::masking::MaskPolicy::new(
            &options.masking,
        )))
        .with_extension(Arc::clone(&options.profile_index));
    let runtime = match runtime {
        Some(shared) => shared,
        None => {
            let cache = CacheManagerConfig::default().with_list_files_cache_limit(0);
            RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(FairSpillPool::new(options.memory_limit)))
                .with_cache_manager(cache)
                .build_arc()?
        }
    };
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features();
    let state = match options.cluster.workers.is_empty() {
        true => state,
        false => distributed::distribute(state, &options.cluster)?,
    };
    let ctx = SessionContext::new_with_state(state.build());
    ctx.register_object_store(lake.store_url().as_ref(), Arc::clone(lake.store()));
    let country = normalize::country(&options.identity.default_country).ok_or_else(|| {
        Error::Config(format!(
            "default_country '{}' is not an ISO country code",
            options.identity.default_country
        ))
    })?;
    ctx.register_catalog(
        CATALOG,
        catalog::lake_catalog(
            lake,
            &options.identity,
            country,
            &options.lookup,
            Arc::clone(&options.profile_index),
        )?,
    );
    functions::register_all(&ctx, country);
    // Not in an `Arc`: datafusion-pg-catalog 0.19's provider impl for
    // `Arc<T>` calls itself, and reading `pg_roles` overflowed the stack.
    setup_pg_catalog(&ctx, CATALOG, AuthManager::default()).map_err(|e| Error::DataFusion(*e))?;
    ctx.register_udf(functions::version());
    crate::postgres::catalog::install(&ctx, CATALOG)?;
    for udf in functions::session::functions() {
        ctx.register_udf(udf);
    }
    // Last: the analytics schema plans its views with this session's
    // functions and catalogs.
    let analytics =
        AnalyticsSchema::new(lake.clone(), ctx.state(), options.identity.consent.clone());
    ctx.catalog(CATALOG)
        .ok_or_else(|| Error::Internal("the panorama catalog is missing".into()))?
        .register_schema("analytics", Arc::new(analytics))?;
    Ok(ctx)
}
