//! Execute of a prepared query: the statement's plan with the bound
//! parameters, optimised once.
//!
//! datafusion-postgres' Execute optimises the plan after binding the
//! parameters, then hands it to a DataFrame whose execution optimises it
//! again: a second pass of every logical optimizer rule, about a tenth of a
//! one-millisecond point lookup. A query takes this path instead: the same
//! parameter decoding (the parser's wire types and DataFusion's inferred
//! types, through `arrow-pg`), the same hooks first (an aborted transaction
//! still refuses it), the same encoding, and one optimisation. A statement
//! with a parameter DataFusion could not type, and every statement that is
//! not a query, go to datafusion-postgres unchanged.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::df;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::types::format::FormatOptions;

/// A prepared statement as datafusion-postgres keeps it.
type Statement_ = (
    String,
    Option<(Statement, datafusion::logical_expr::LogicalPlan)>,
);

/// One role's session and hooks, and where its queries are planned.
pub(super) struct Executor {
    pub ctx: Arc<SessionContext>,
    pub hooks: Vec<Arc<dyn QueryHook>>,
    pub runtime: Option<crate::executor::QueryHandle>,
}

impl Executor {
    /// Run `portal` if it is a query whose parameters are all typed
    /// (`wire_types` as the parser described them to the client); `None`
    /// leaves it to datafusion-postgres.
    pub(super) async fn query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Statement_>,
        wire_types: &[Type],
    ) -> Option<PgWireResult<Response>>
    where
        C: HookClient,
    {
        let (_, Some((statement @ Statement::Query(_), plan))) = &portal.statement.statement else {
            return None;
        };
        let inferred = ordered_types(plan.get_parameter_types().ok()?)?;
        if inferred.len() != wire_types.len() {
            return None;
        }
        Some(
            self.run(client, portal, statement, plan, &inferred, wire_types)
                .await,
        )
    }

    async fn run<C>(
        &self,
        client: &mut C,
        portal: &Portal<Statement_>,
        statement: &Statement,
        plan: &datafusion::logical_expr::LogicalPlan,
        inferred: &[DataType],
        wire_types: &[Type],
    ) -> PgWireResult<Response>
    where
        C: HookClient,
    {
        let inferred: Vec<Option<&DataType>> = inferred.iter().map(Some).collect();
        let wire: Vec<Option<&Type>> = wire_types.iter().map(Some).collect();
        let params = df::deserialize_parameters_with_server_types(portal, &inferred, &wire)?;
        for hook in &self.hooks {
            if let Some(answer) = hook
                .handle_extended_query(statement, plan, &params, &self.ctx, client)
                .await
            {
                return answer;
            }
        }
        let api = |e| PgWireError::ApiError(Box::new(e));
        let bound = plan
            .clone()
            .replace_params_with_values(&params)
            .map_err(api)?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let format = portal.result_column_format.clone();
        let ctx = Arc::clone(&self.ctx);
        // Optimised once, when the DataFrame plans its execution: in a task
        // the statement's deadline can abandon (`super::planned`).
        let work = async move {
            let frame = ctx.execute_logical_plan(bound).await.map_err(api)?;
            super::planned::respond(frame, false, &format, options).await
        };
        super::planned::run_planned(self.runtime.as_ref(), &*client, work).await
    }
}

/// The parameters' types in `$1, $2, …` order; `None` if one is untyped or
/// the numbering has a gap.
fn ordered_types(
    types: std::collections::HashMap<String, Option<DataType>>,
) -> Option<Vec<DataType>> {
    let mut numbered: Vec<(usize, DataType)> = types
        .into_iter()
        .map(|(id, ty)| Some((id.strip_prefix('$')?.parse().ok()?, ty?)))
        .collect::<Option<_>>()?;
    numbered.sort_unstable_by_key(|(n, _)| *n);
    numbered
        .iter()
        .enumerate()
        .all(|(i, (n, _))| *n == i + 1)
        .then(|| numbered.into_iter().map(|(_, ty)| ty).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_ordered_by_number_and_untyped_ones_fall_back() {
        let types = |pairs: &[(&str, Option<DataType>)]| {
            pairs
                .iter()
                .map(|(id, ty)| (id.to_string(), ty.clone()))
                .collect()
        };
        assert_eq!(
            ordered_types(types(&[
                ("$2", Some(DataType::Int64)),
                ("$10", Some(DataType::Utf8)),
                ("$1", Some(DataType::Utf8)),
                ("$3", Some(DataType::Date32)),
                ("$4", Some(DataType::Int32)),
                ("$5", Some(DataType::Int32)),
                ("$6", Some(DataType::Int32)),
                ("$7", Some(DataType::Int32)),
                ("$8", Some(DataType::Int32)),
                ("$9", Some(DataType::Int32)),
            ]))
            .map(|t| (t[0].clone(), t[1].clone(), t[9].clone())),
            Some((DataType::Utf8, DataType::Int64, DataType::Utf8))
        );
        assert_eq!(ordered_types(types(&[])), Some(vec![]));
        assert_eq!(ordered_types(types(&[("$1", None)])), None);
        assert_eq!(ordered_types(types(&[("$2", Some(DataType::Utf8))])), None);
    }
}
