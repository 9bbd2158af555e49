//! The people a privacy request is about, and how to recognise their rows.
//!
//! A request names identifiers (`email jane@example.com`); [`People::resolve`]
//! normalises them as identity resolution does and follows the identity
//! graph (`cdp.identity_links`) to every identifier of the profiles they
//! belong to — all the cookies, user ids, emails and phones of the person.
//! The rows about them are then recognised by SQL functions that carry the
//! values inside them ([`People::about`], [`People::mentioned_in`]), so a
//! delete's predicate, which Delta records in its commit, reads
//! `about_erased_people(email, customer_id, …)` and never quotes a value.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{SessionContext, col, lit};

use crate::error::{Error, Result};
use crate::identity::IdentityConfig;
use crate::identity::suppression::{Sources, normalised, text};

/// The identifiers of the people a request is about.
#[derive(Debug, Default)]
pub struct People {
    /// Normalised values by identifier type.
    by_type: HashMap<String, HashSet<String>>,
    /// Every value, lower-cased (to recognise them in free text and in
    /// tables that keep values of any type).
    any: HashSet<String>,
    /// The profiles they make up.
    pub profiles: Vec<String>,
    mentions: Option<AhoCorasick>,
}

impl People {
    /// The people `requested` (identifier type, value as given) names,
    /// with every identifier the identity graph links to them.
    pub async fn resolve(
        ctx: &SessionContext,
        config: &IdentityConfig,
        requested: &[(String, String)],
    ) -> Result<People> {
        let mut by_type: HashMap<String, HashSet<String>> = HashMap::new();
        for (id_type, value) in requested {
            known_type(config, id_type)?;
            // A value the rule cannot normalise is looked for as given.
            let value = normalised(config, id_type, value);
            if !value.is_empty() {
                by_type.entry(id_type.clone()).or_default().insert(value);
            }
        }
        let profiles = profiles_of(ctx, &by_type).await?;
        if !profiles.is_empty() {
            let links = ctx
                .table("cdp.identity_links")
                .await?
                .filter(col("profile_id").in_list(profiles.iter().map(lit).collect(), false))?
                .select_columns(&["id_type", "id_value"])?
                .collect()
                .await?;
            for batch in &links {
                let (types, values) = (text(batch.column(0))?, text(batch.column(1))?);
                for i in 0..batch.num_rows() {
                    if types.is_valid(i) && values.is_valid(i) {
                        by_type
                            .entry(types.value(i).to_string())
                            .or_default()
                            .insert(values.value(i).to_string());
                    }
                }
            }
        }
        Ok(People::new(by_type, profiles))
    }

    /// The identifiers of `cdp.identity_links` whose salted hash
    /// ([`crate::identity::suppression::hash`]) is one of `hashes`, as
    /// (type, normalised value): how an interrupted erasure finds again the
    /// people it recorded only as hashes.
    pub async fn unhashed(
        ctx: &SessionContext,
        salt: &[u8; 32],
        hashes: &HashSet<(String, String)>,
    ) -> Result<Vec<(String, String)>> {
        let mut found = Vec::new();
        if hashes.is_empty() {
            return Ok(found);
        }
        let mut links = ctx
            .table("cdp.identity_links")
            .await?
            .select_columns(&["id_type", "id_value"])?
            .execute_stream()
            .await?;
        while let Some(batch) = futures::StreamExt::next(&mut links).await {
            let batch = batch?;
            let (types, values) = (text(batch.column(0))?, text(batch.column(1))?);
            for i in 0..batch.num_rows() {
                if types.is_null(i) || values.is_null(i) {
                    continue;
                }
                let (id_type, value) = (types.value(i), values.value(i));
                let hash = crate::identity::suppression::hash(salt, id_type, value);
                if hashes.contains(&(id_type.to_string(), hash)) {
                    found.push((id_type.to_string(), value.to_string()));
                }
            }
        }
        Ok(found)
    }

    fn new(by_type: HashMap<String, HashSet<String>>, profiles: Vec<String>) -> People {
        let any: HashSet<String> = by_type
            .values()
            .flatten()
            .map(|v| v.to_lowercase())
            .chain(profiles.iter().cloned())
            .collect();
        let mentions = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(any.iter())
            .ok();
        People {
            by_type,
            any,
            profiles,
            mentions,
        }
    }

    /// Every identifier of the people, as (type, normalised value).
    pub fn identifier_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_type
            .iter()
            .flat_map(|(t, values)| values.iter().map(move |v| (t.as_str(), v.as_str())))
    }

    /// How many identifiers (of every type) the people have.
    pub fn identifiers(&self) -> usize {
        self.by_type.values().map(HashSet::len).sum()
    }

    /// Whether the request found no identifier at all.
    pub fn is_empty(&self) -> bool {
        self.any.is_empty()
    }

    /// The predicate "this row of `table` carries one of the people's
    /// identifiers", over the table's identifier sources; `None` when the
    /// table has none.
    pub fn about(self: &Arc<Self>, table: &str, config: &IdentityConfig) -> Result<Option<Expr>> {
        let sources = Sources::of(table, config)?;
        if sources.sources.is_empty() {
            return Ok(None);
        }
        let args = sources
            .sources
            .iter()
            .map(|s| col(format!("\"{}\"", s.column)))
            .collect();
        let udf = Match {
            name: "about_erased_people",
            people: Arc::clone(self),
            test: Test::Identifiers(sources),
            signature: Signature::variadic_any(Volatility::Immutable),
        };
        Ok(Some(ScalarUDF::new_from_impl(udf).call(args)))
    }

    /// The predicate "`column` (free text: a rejected row as sent) contains
    /// one of the people's identifiers", ignoring ASCII case.
    pub fn mentioned_in(self: &Arc<Self>, column: &str) -> Expr {
        self.call("mentions_erased_people", Test::Mentions, column)
    }

    /// The predicate "`column` holds one of the people's identifiers or
    /// profile ids", ignoring case.
    pub fn value_in(self: &Arc<Self>, column: &str) -> Expr {
        self.call("is_erased_value", Test::Value, column)
    }

    /// The predicate "`column` holds one of `keys`" (the order ids of the
    /// people's orders, say), without quoting them either.
    pub fn key_in(keys: HashSet<String>, column: &str) -> Expr {
        let people = Arc::new(People {
            any: keys,
            ..People::default()
        });
        people.call("of_erased_people", Test::Key, column)
    }

    fn call(self: &Arc<Self>, name: &'static str, test: Test, column: &str) -> Expr {
        let udf = Match {
            name,
            people: Arc::clone(self),
            test,
            signature: Signature::variadic_any(Volatility::Immutable),
        };
        ScalarUDF::new_from_impl(udf).call(vec![col(format!("\"{column}\""))])
    }

    /// For each row of `batch`: whether one of its text cells holds one
    /// of the people's identifiers or profile ids (ignoring case), as in
    /// a job's output table, whatever its columns are called.
    pub fn rows_holding(&self, batch: &RecordBatch) -> Result<Vec<bool>> {
        let mut hit = vec![false; batch.num_rows()];
        for column in batch.columns() {
            let text = match column.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    cast(column, &DataType::Utf8)
                        .map_err(|e| Error::arrow("reading a job table", e))?
                }
                DataType::List(_) | DataType::LargeList(_) => {
                    let list = cast(column, &DataType::Utf8).ok();
                    match list {
                        Some(list) => list,
                        None => continue,
                    }
                }
                _ => continue,
            };
            let text = text.as_string::<i32>();
            for (i, hit) in hit.iter_mut().enumerate() {
                if !*hit && text.is_valid(i) {
                    let value = text.value(i);
                    *hit = self.any.contains(&value.trim().to_lowercase())
                        || (matches!(
                            column.data_type(),
                            DataType::List(_) | DataType::LargeList(_)
                        ) && self.mentions.as_ref().is_some_and(|m| m.is_match(value)));
                }
            }
        }
        Ok(hit)
    }

    fn has(&self, id_type: &str, value: &str) -> bool {
        self.by_type
            .get(id_type)
            .is_some_and(|values| values.contains(value))
    }
}

/// Refuse an identifier type `[identity]` does not declare.
pub fn known_type(config: &IdentityConfig, id_type: &str) -> Result<()> {
    if config.id_type(id_type).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = config.types.iter().map(|t| t.name.as_str()).collect();
    Err(Error::Config(format!(
        "unknown identifier type '{id_type}' (types: {})",
        known.join(", ")
    )))
}

/// The profiles holding any of `by_type`'s identifiers.
async fn profiles_of(
    ctx: &SessionContext,
    by_type: &HashMap<String, HashSet<String>>,
) -> Result<Vec<String>> {
    let Some(wanted) = by_type
        .iter()
        .map(|(id_type, values)| {
            col("id_type")
                .eq(lit(id_type.as_str()))
                .and(col("id_value").in_list(values.iter().map(lit).collect(), false))
        })
        .reduce(Expr::or)
    else {
        return Ok(Vec::new());
    };
    let batches = ctx
        .table("cdp.identity_links")
        .await?
        .filter(wanted)?
        .select_columns(&["profile_id"])?
        .distinct()?
        .collect()
        .await?;
    let mut profiles = Vec::new();
    for batch in &batches {
        let ids = text(batch.column(0))?;
        profiles.extend(ids.iter().flatten().map(str::to_string));
    }
    profiles.sort();
    Ok(profiles)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Test {
    /// The arguments are the table's identifier sources, in order.
    Identifiers(Sources),
    /// The argument contains a value.
    Mentions,
    /// The argument is a value (any type, any case).
    Value,
    /// The argument is one of the keys, exactly.
    Key,
}

/// A SQL function answering whether a row is about the people.
#[derive(Debug)]
struct Match {
    name: &'static str,
    people: Arc<People>,
    test: Test,
    signature: Signature,
}

impl PartialEq for Match {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && Arc::ptr_eq(&self.people, &other.people)
            && self.test == other.test
    }
}

impl Eq for Match {}

impl Hash for Match {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        Arc::as_ptr(&self.people).hash(state);
        self.test.hash(state);
    }
}

impl Match {
    fn row(&self, columns: &[StringArray], i: usize) -> bool {
        let people = &self.people;
        match &self.test {
            Test::Identifiers(sources) => sources
                .values(columns, i)
                .any(|(id_type, value)| people.has(id_type, &value)),
            Test::Mentions => {
                let column = &columns[0];
                !column.is_null(i)
                    && people
                        .mentions
                        .as_ref()
                        .is_some_and(|m| m.is_match(column.value(i)))
            }
            Test::Value => {
                let column = &columns[0];
                !column.is_null(i) && people.any.contains(&column.value(i).trim().to_lowercase())
            }
            Test::Key => {
                let column = &columns[0];
                !column.is_null(i) && people.any.contains(column.value(i))
            }
        }
    }
}

impl ScalarUDFImpl for Match {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        by_row(args, |columns, i| self.row(columns, i))
    }
}

/// A boolean SQL function's answer, row by row, from its arguments as
/// text (in argument order).
pub(super) fn by_row(
    args: ScalarFunctionArgs,
    row: impl Fn(&[StringArray], usize) -> bool,
) -> datafusion::error::Result<ColumnarValue> {
    let rows = args.number_rows;
    let arrays = ColumnarValue::values_to_arrays(&args.args)?;
    let columns = arrays
        .iter()
        .map(|a| Ok(cast(a, &DataType::Utf8)?.as_string::<i32>().clone()))
        .collect::<datafusion::error::Result<Vec<StringArray>>>()?;
    let answer: BooleanArray = (0..rows).map(|i| Some(row(&columns, i))).collect();
    Ok(ColumnarValue::Array(Arc::new(answer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rows_are_recognised_by_normalised_identifiers_and_mentions() {
        let people = Arc::new(People::new(
            HashMap::from([
                (
                    "email".to_string(),
                    HashSet::from(["jane@x.com".to_string()]),
                ),
                (
                    "phone".to_string(),
                    HashSet::from(["+33612345678".to_string()]),
                ),
            ]),
            vec!["p-1".into()],
        ));
        let config = IdentityConfig::default();
        let ctx = SessionContext::new();
        ctx.sql(
            "CREATE TABLE customers (customer_id TEXT, email TEXT, phone TEXT) AS VALUES \
             ('C1', ' Jane@X.com ', NULL), ('C2', 'bob@x.com', '06 12 34 56 78'), \
             ('C3', 'bob@x.com', NULL)",
        )
        .await
        .unwrap();
        let about = people.about("customers", &config).unwrap().unwrap();
        let text = about.to_string();
        assert!(
            text.starts_with("about_erased_people(") && !text.contains("jane"),
            "the predicate quotes no value: {text}"
        );
        let hits = ctx
            .table("customers")
            .await
            .unwrap()
            .filter(about)
            .unwrap()
            .count()
            .await
            .unwrap();
        assert_eq!(hits, 2);
        ctx.sql(
            "CREATE TABLE rejects (raw TEXT) AS VALUES ('C9,JANE@x.com,12'), ('C8,x,1'), (NULL)",
        )
        .await
        .unwrap();
        let hits = ctx
            .table("rejects")
            .await
            .unwrap()
            .filter(people.mentioned_in("raw"))
            .unwrap()
            .count()
            .await
            .unwrap();
        assert_eq!(hits, 1);
        assert!(people.about("products", &config).unwrap().is_none());
    }
}
