//! The `analytics` schema: the views Panorama ships (`sql/analytics/*.sql`,
//! compiled in), the segments users save with `CREATE VIEW analytics.<name>
//! AS …` (persisted in the lake under `analytics/views/<name>.sql`, so they
//! survive restarts and every server on the lake sees them; `DROP VIEW`
//! removes them), and the tables scheduled jobs write
//! (`analytics/tables/<name>/`, see [`crate::jobs`]).
//!
//! Everything is resolved when a query is planned, from the lake: nothing
//! is cached, so a segment saved through one server is visible to the next
//! query on another.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, exec_err};
use datafusion::datasource::ViewTable;
use datafusion::execution::context::SessionState;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use crate::identity::consent::ConsentConfig;
use crate::lake::Lake;

pub mod tables;

/// The shipped views: (name, SQL of the SELECT).
pub const SHIPPED: &[(&str, &str)] = &[
    ("rfm", include_str!("../../sql/analytics/rfm.sql")),
    (
        "survey_answers",
        include_str!("../../sql/analytics/survey_answers.sql"),
    ),
    (
        "nps_by_month",
        include_str!("../../sql/analytics/nps_by_month.sql"),
    ),
    (
        "nps_by_channel",
        include_str!("../../sql/analytics/nps_by_channel.sql"),
    ),
    (
        "nps_by_segment",
        include_str!("../../sql/analytics/nps_by_segment.sql"),
    ),
    (
        "csat_ces_by_month",
        include_str!("../../sql/analytics/csat_ces_by_month.sql"),
    ),
    (
        "csat_ces_by_channel",
        include_str!("../../sql/analytics/csat_ces_by_channel.sql"),
    ),
    (
        "csat_ces_by_segment",
        include_str!("../../sql/analytics/csat_ces_by_segment.sql"),
    ),
    (
        "detractors",
        include_str!("../../sql/analytics/detractors.sql"),
    ),
    (
        "customer_value",
        include_str!("../../sql/analytics/customer_value.sql"),
    ),
    (
        "churn_risk",
        include_str!("../../sql/analytics/churn_risk.sql"),
    ),
    (
        "segment_changes",
        include_str!("../../sql/analytics/segment_changes.sql"),
    ),
    (
        "segment_sizes",
        include_str!("../../sql/analytics/segment_sizes.sql"),
    ),
];

/// Folder of saved segments.
pub fn views_dir() -> Path {
    Path::from("analytics/views")
}

/// Run `future` to completion from synchronous catalog code (DataFusion's
/// `register_table` and `table_names` are not async). Needs the
/// multi-threaded runtime Panorama always runs on.
fn block_on<F: std::future::Future>(future: F) -> datafusion::error::Result<F::Output> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| DataFusionError::Execution(format!("no async runtime: {e}")))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return exec_err!("saved segments need the multi-threaded runtime");
    }
    Ok(tokio::task::block_in_place(|| handle.block_on(future)))
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The header line that marks a saved segment's consent purpose.
const PURPOSE_HEADER: &str = "-- purpose:";

/// The consent purpose a saved segment's definition is marked with.
pub fn purpose_of(definition: &str) -> Option<&str> {
    definition
        .lines()
        .map_while(|line| line.trim().strip_prefix("--"))
        .find_map(|rest| rest.trim().strip_prefix("purpose:"))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// `query` keeping only the rows of profiles whose consent admits
/// `purpose` (a missing profile admits nothing).
pub fn gated(query: &str, purpose: &str, consent: &ConsentConfig) -> String {
    let admits = consent.admits_sql(purpose, &format!("_p.consent_{purpose}"));
    format!(
        "SELECT _s.* FROM ({}) _s JOIN cdp.profiles _p \
         ON _p.profile_id = CAST(_s.profile_id AS VARCHAR) WHERE coalesce({admits}, false)",
        query.trim().trim_end_matches(';')
    )
}

/// The stored definition of the saved segment `name`, if there is one.
pub async fn saved_definition(lake: &Lake, name: &str) -> crate::error::Result<Option<String>> {
    let bytes = lake.get_bytes(&AnalyticsSchema::view_path(name)).await?;
    Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// Save a segment for a consent purpose in the analytics schema of `ctx`
/// (see [`AnalyticsSchema::save_for_purpose`]).
pub async fn save_for_purpose(
    ctx: &datafusion::prelude::SessionContext,
    name: &str,
    definition: &str,
    purpose: &str,
    or_replace: bool,
) -> datafusion::error::Result<()> {
    let catalog = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    let Some(mut schema) = ctx.catalog(&catalog).and_then(|c| c.schema("analytics")) else {
        return exec_err!("no analytics schema");
    };
    if let Some(masked) = schema.downcast_ref::<crate::catalog::masking::MaskedSchema>() {
        schema = Arc::clone(masked.inner());
    }
    let Some(analytics) = schema.downcast_ref::<AnalyticsSchema>() else {
        return exec_err!("no analytics schema");
    };
    analytics
        .save_for_purpose(name, definition, purpose, or_replace)
        .await
}

/// The SELECT of a `CREATE [OR REPLACE] VIEW … AS SELECT …` statement.
pub fn view_query(definition: &str) -> datafusion::error::Result<String> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, definition)
        .map_err(|e| DataFusionError::Plan(format!("saved view: {e}")))?;
    match statements.as_slice() {
        [Statement::CreateView(view)] => Ok(view.query.to_string()),
        _ => Ok(definition.to_string()),
    }
}

/// The `analytics` schema provider.
#[derive(Debug)]
pub struct AnalyticsSchema {
    lake: Lake,
    /// The session the views are planned in (its catalogs are shared).
    state: SessionState,
    /// The consent purposes segments may be saved for.
    consent: ConsentConfig,
}

impl AnalyticsSchema {
    pub fn new(lake: Lake, state: SessionState, consent: ConsentConfig) -> AnalyticsSchema {
        AnalyticsSchema {
            lake,
            state,
            consent,
        }
    }

    /// Save the segment `name` (`definition`, its `CREATE VIEW` without
    /// options) for `purpose`, in one write: from its first read it
    /// returns only the profiles whose consent admits the purpose. It must
    /// return a `profile_id` column.
    pub async fn save_for_purpose(
        &self,
        name: &str,
        definition: &str,
        purpose: &str,
        or_replace: bool,
    ) -> datafusion::error::Result<()> {
        if !self.consent.is_purpose(purpose) {
            return exec_err!(
                "purpose '{purpose}' is not one of the consent purposes ({})",
                self.consent.purposes.join(", ")
            );
        }
        if SHIPPED.iter().any(|(n, _)| *n == name) {
            return exec_err!(
                "analytics.{name} is a view Panorama ships; save yours under another name"
            );
        }
        if !or_replace && self.table_exist_async(name).await? {
            return exec_err!("analytics.{name} already exists");
        }
        let plan = self
            .state
            .create_logical_plan(&view_query(definition)?)
            .await?;
        if plan
            .schema()
            .field_with_unqualified_name("profile_id")
            .is_err()
        {
            return exec_err!(
                "a segment saved for a purpose must return a profile_id column: analytics.{name} does not"
            );
        }
        let marked = format!("{PURPOSE_HEADER} {purpose}\n{definition}");
        let path = self.lake.path(&Self::view_path(name));
        self.lake
            .store()
            .put(&path, PutPayload::from(marked.into_bytes()))
            .await
            .map_err(external)?;
        Ok(())
    }

    async fn table_exist_async(&self, name: &str) -> datafusion::error::Result<bool> {
        Ok(self.saved(name).await?.is_some()
            || tables::exists(&self.lake, name).await.map_err(external)?)
    }

    fn view_path(name: &str) -> Path {
        views_dir().join(format!("{name}.sql"))
    }

    async fn saved(&self, name: &str) -> datafusion::error::Result<Option<String>> {
        saved_definition(&self.lake, name).await.map_err(external)
    }

    async fn saved_names(&self) -> datafusion::error::Result<Vec<String>> {
        let files = self.lake.files_named(&views_dir(), ".sql").await;
        Ok(files
            .map_err(external)?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    async fn view(&self, query: &str) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let plan = self.state.create_logical_plan(query).await?;
        Ok(Arc::new(ViewTable::new(plan, Some(query.to_string()))))
    }
}

#[async_trait]
impl SchemaProvider for AnalyticsSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
        if let Ok(Ok(saved)) = block_on(self.saved_names()) {
            names.extend(saved);
        }
        if let Ok(Ok(jobs)) = block_on(tables::names(&self.lake)) {
            names.extend(jobs);
        }
        names.sort();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        if let Some((_, sql)) = SHIPPED.iter().find(|(n, _)| *n == name) {
            return self.view(sql).await.map(Some);
        }
        if let Some(definition) = self.saved(name).await? {
            let query = view_query(&definition)?;
            let query = match purpose_of(&definition) {
                Some(purpose) => gated(&query, purpose, &self.consent),
                None => query,
            };
            return self.view(&query).await.map(Some);
        }
        tables::table(&self.lake, &self.state, name).await
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        if SHIPPED.iter().any(|(n, _)| *n == name) {
            return exec_err!(
                "analytics.{name} is a view Panorama ships; save yours under another name"
            );
        }
        let Some(definition) = table.get_table_definition() else {
            return exec_err!(
                "only views can be created in analytics (scheduled jobs write its tables)"
            );
        };
        let path = self.lake.path(&Self::view_path(&name));
        let payload = PutPayload::from(definition.to_string().into_bytes());
        block_on(self.lake.store().put(&path, payload))?.map_err(external)?;
        Ok(None)
    }

    fn deregister_table(
        &self,
        name: &str,
    ) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        if SHIPPED.iter().any(|(n, _)| *n == name) {
            return exec_err!("analytics.{name} is a view Panorama ships and cannot be dropped");
        }
        let existing = block_on(self.table(name))??;
        if existing.is_some() {
            let path = self.lake.path(&Self::view_path(name));
            match block_on(self.lake.store().delete(&path))? {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(external(e)),
            }
        }
        Ok(existing)
    }

    fn table_exist(&self, name: &str) -> bool {
        SHIPPED.iter().any(|(n, _)| *n == name)
            || matches!(block_on(self.saved(name)), Ok(Ok(Some(_))))
            || matches!(block_on(tables::exists(&self.lake, name)), Ok(Ok(true)))
    }
}
