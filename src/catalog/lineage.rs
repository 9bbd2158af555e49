//! Which columns of a query's result carry personal data: column-level
//! lineage over a DataFusion logical plan.
//!
//! A result column is personal when any column it is computed from is
//! personal, wherever it is stored or renamed: `email AS contact_email`,
//! `lower(email)`, `min(phone)`, a `CASE` over a name, a scalar subquery
//! returning an email. Counting is not reading: `count(email)` and
//! `count(DISTINCT email)` are not personal, nor are ranks. A JSON column
//! passed through whole keeps its JSON mask (its allowed keys stay
//! readable); a value extracted from it with `json_get_str(col, 'key')` is
//! personal unless the key is one the masking policy allows. At the bottom,
//! a table's own columns are classified by [`super::masking::masks_of`].
//! Anything this module does not recognise is classified by the columns it
//! may read, never left unmasked by default.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, JoinType};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::utils::grouping_set_to_exprlist;
use datafusion::logical_expr::{Distinct, Expr, LogicalPlan};
use datafusion::scalar::ScalarValue;

use super::masking::{Mask, MaskPolicy, Masks, masks_of, name_masks, projected};

/// Aggregates and window functions whose result is a count or a rank,
/// never one of the values they read.
const COUNTING: &[&str] = &[
    "count",
    "approx_distinct",
    "grouping",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
];

/// Functions that read one key of a JSON text: `(column, 'path')`.
const JSON_EXTRACT: &[&str] = &["json_get_str"];

/// The masks of `plan`'s output columns, in schema order.
pub fn plan_masks(plan: &LogicalPlan, policy: &MaskPolicy) -> Masks {
    use LogicalPlan as P;
    let masks = match plan {
        P::TableScan(scan) => {
            let base = match source_as_provider(&scan.source) {
                Ok(provider) => masks_of(provider.as_ref(), policy),
                Err(_) => name_masks(&scan.source.schema()),
            };
            projected(&base, scan.projection.as_ref())
        }
        P::Projection(p) => {
            let input = plan_masks(&p.input, policy);
            p.expr
                .iter()
                .map(|e| expr_mask(e, p.input.schema(), &input, policy))
                .collect()
        }
        P::Aggregate(a) => {
            let input = plan_masks(&a.input, policy);
            let schema = a.input.schema();
            let mut masks: Masks = match grouping_set_to_exprlist(&a.group_expr) {
                Ok(groups) => groups
                    .iter()
                    .map(|e| expr_mask(e, schema, &input, policy))
                    .collect(),
                Err(_) => return conservative(plan, policy),
            };
            // The grouping id of GROUPING SETS / ROLLUP / CUBE.
            let expected = plan.schema().fields().len();
            while masks.len() + a.aggr_expr.len() < expected {
                masks.push(None);
            }
            masks.extend(
                a.aggr_expr
                    .iter()
                    .map(|e| expr_mask(e, schema, &input, policy)),
            );
            masks
        }
        P::Window(w) => {
            let mut masks = plan_masks(&w.input, policy);
            let schema = w.input.schema();
            let input = masks.clone();
            masks.extend(
                w.window_expr
                    .iter()
                    .map(|e| expr_mask(e, schema, &input, policy)),
            );
            masks
        }
        P::Join(j) => {
            let left = plan_masks(&j.left, policy);
            let right = plan_masks(&j.right, policy);
            match j.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti => left,
                JoinType::RightSemi | JoinType::RightAnti => right,
                JoinType::LeftMark => left.into_iter().chain([None]).collect(),
                JoinType::RightMark => right.into_iter().chain([None]).collect(),
                _ => left.into_iter().chain(right).collect(),
            }
        }
        P::Union(u) => {
            let mut masks: Masks = vec![None; plan.schema().fields().len()];
            for input in &u.inputs {
                for (mask, from) in masks.iter_mut().zip(plan_masks(input, policy)) {
                    *mask = join(*mask, from);
                }
            }
            masks
        }
        P::Subquery(s) => plan_masks(&s.subquery, policy),
        P::SubqueryAlias(s) => plan_masks(&s.input, policy),
        P::Filter(f) => plan_masks(&f.input, policy),
        P::Sort(s) => plan_masks(&s.input, policy),
        P::Limit(l) => plan_masks(&l.input, policy),
        P::Repartition(r) => plan_masks(&r.input, policy),
        P::Distinct(Distinct::All(input)) => plan_masks(input, policy),
        P::Distinct(Distinct::On(on)) => {
            let input = plan_masks(&on.input, policy);
            on.select_expr
                .iter()
                .map(|e| expr_mask(e, on.input.schema(), &input, policy))
                .collect()
        }
        P::Values(_) | P::EmptyRelation(_) => vec![None; plan.schema().fields().len()],
        _ => return conservative(plan, policy),
    };
    if masks.len() == plan.schema().fields().len() {
        masks
    } else {
        conservative(plan, policy)
    }
}

/// For a node this module does not model: each output column takes the
/// mask of an input column of the same name, and one it cannot match is
/// personal when any input is.
fn conservative(plan: &LogicalPlan, policy: &MaskPolicy) -> Masks {
    let inputs: Vec<(Arc<DFSchema>, Masks)> = plan
        .inputs()
        .into_iter()
        .map(|input| (Arc::clone(input.schema()), plan_masks(input, policy)))
        .collect();
    let any_personal = inputs
        .iter()
        .flat_map(|(_, masks)| masks.iter())
        .any(Option::is_some);
    plan.schema()
        .iter()
        .map(|(qualifier, field)| {
            inputs
                .iter()
                .find_map(|(schema, masks)| {
                    let i = schema.maybe_index_of_column(&datafusion::common::Column::new(
                        qualifier.cloned(),
                        field.name(),
                    ))?;
                    Some(masks.get(i).copied().flatten())
                })
                .unwrap_or(any_personal.then_some(Mask::Whole))
        })
        .collect()
}

/// The stronger of two masks.
fn join(a: Option<Mask>, b: Option<Mask>) -> Option<Mask> {
    match (a, b) {
        (Some(Mask::Whole), _) | (_, Some(Mask::Whole)) => Some(Mask::Whole),
        (Some(Mask::Json), _) | (_, Some(Mask::Json)) => Some(Mask::Json),
        _ => None,
    }
}

/// The mask of one expression over `schema` (whose columns have `masks`).
fn expr_mask(expr: &Expr, schema: &DFSchema, masks: &Masks, policy: &MaskPolicy) -> Option<Mask> {
    let column = |c: &datafusion::common::Column| -> Option<Mask> {
        match schema.maybe_index_of_column(c) {
            Some(i) => masks.get(i).copied().flatten(),
            // An outer reference or a column this schema does not hold:
            // assume the worst.
            None => Some(Mask::Whole),
        }
    };
    match expr {
        Expr::Alias(alias) => return expr_mask(&alias.expr, schema, masks, policy),
        Expr::Column(c) => return column(c),
        Expr::Literal(..) => return None,
        Expr::AggregateFunction(AggregateFunction { func, .. })
            if COUNTING.contains(&func.name()) =>
        {
            return None;
        }
        Expr::WindowFunction(w) => {
            let WindowFunction { fun, .. } = w.as_ref();
            if COUNTING.contains(&fun.name()) {
                return None;
            }
        }
        Expr::ScalarFunction(f) if JSON_EXTRACT.contains(&f.name()) => {
            if let [
                Expr::Column(c),
                Expr::Literal(ScalarValue::Utf8(Some(path)), _),
                ..,
            ] = f.args.as_slice()
            {
                return match column(c) {
                    None => None,
                    Some(Mask::Json) if policy.allows(&c.name, path) => None,
                    Some(_) => Some(Mask::Whole),
                };
            }
        }
        _ => {}
    }
    // Anything else is personal if anything it reads is.
    let mut personal = false;
    let _ = expr.apply(|e| {
        let found = match e {
            Expr::Column(c) => column(c).is_some(),
            Expr::ScalarSubquery(s) => plan_masks(&s.subquery, policy)
                .first()
                .copied()
                .flatten()
                .is_some(),
            Expr::OuterReferenceColumn(..) => true,
            _ => false,
        };
        personal |= found;
        Ok(if personal {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    personal.then_some(Mask::Whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    async fn masks(sql: &str) -> Vec<(String, Option<Mask>)> {
        let ctx = SessionContext::new();
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, true),
            Field::new("email", DataType::Utf8, true),
            Field::new("traits", DataType::Utf8, true),
            Field::new("amount", DataType::Int64, true),
        ]));
        let table = MemTable::try_new(schema, vec![vec![]]).expect("table");
        ctx.register_table("c", Arc::new(table)).expect("register");
        ctx.register_udf(crate::functions::json_get_str());
        let plan = ctx
            .state()
            .create_logical_plan(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let policy = MaskPolicy::default();
        plan.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .zip(plan_masks(&plan, &policy))
            .collect()
    }

    fn personal(masks: &[(String, Option<Mask>)]) -> Vec<&str> {
        masks
            .iter()
            .filter(|(_, m)| m.is_some())
            .map(|(n, _)| n.as_str())
            .collect()
    }

    #[tokio::test]
    async fn personal_data_stays_personal_under_any_name_or_function() {
        let found = masks(
            "SELECT email AS contact_email, lower(email) AS l, customer_id, \
             CASE WHEN amount > 0 THEN email ELSE 'x' END AS c, \
             (SELECT max(email) FROM c) AS sub, amount * 2 AS twice FROM c",
        )
        .await;
        assert_eq!(personal(&found), vec!["contact_email", "l", "c", "sub"]);
    }

    #[tokio::test]
    async fn counts_are_not_personal_but_picked_values_are() {
        let found = masks(
            "SELECT customer_id, count(email) AS n, count(DISTINCT email) AS d, \
             min(email) AS first_email, array_agg(email) AS all_emails \
             FROM c GROUP BY customer_id",
        )
        .await;
        assert_eq!(personal(&found), vec!["first_email", "all_emails"]);
    }

    #[tokio::test]
    async fn lineage_follows_joins_unions_ctes_and_windows() {
        let found = masks(
            "WITH x AS (SELECT customer_id AS id, email AS e FROM c) \
             SELECT a.id, b.e, row_number() OVER (ORDER BY b.e) AS r, \
             first_value(b.e) OVER (ORDER BY a.id) AS fv \
             FROM x a JOIN x b ON a.id = b.id \
             UNION ALL SELECT customer_id, 'n', 1, customer_id AS again FROM c",
        )
        .await;
        assert_eq!(personal(&found), vec!["e", "fv"]);
    }

    #[tokio::test]
    async fn json_keeps_its_mask_and_only_allowed_keys_come_out() {
        let found = masks(
            "SELECT traits, json_get_str(traits, 'plan') AS plan, \
             json_get_str(traits, 'email') AS e, json_get_str(email, 'plan') AS odd FROM c",
        )
        .await;
        assert_eq!(found[0].1, Some(Mask::Json));
        assert_eq!(personal(&found), vec!["traits", "e", "odd"]);
    }
}
