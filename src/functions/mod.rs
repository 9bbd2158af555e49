//! Panorama's SQL functions, registered on every session by
//! [`register_all`]: `normalize_email(text)`, `normalize_phone(text)`
//! (E.164, with the configured default country), `normalize_id(text)`,
//! `normalize_lower(text)`, `normalize_exact(text)` and
//! `normalize_digits(text)` — the very code identity resolution matches
//! with, so SQL and the identity graph always agree; the survey and RFM
//! functions of [`scores`]; and `json_get_str(json, 'a.b')`, a string at a
//! dotted path of the JSON text columns (`properties`, `traits`,
//! `context`), and [`json_object`]'s `json_build_object(k, v, …)`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use phonenumber::country::Id as Country;

use crate::identity::normalize::{self, Normalize};

pub mod json_object;
pub mod scores;
pub mod session;

/// Register every Panorama function on `ctx`.
pub fn register_all(ctx: &SessionContext, default_country: Country) {
    for (name, kind) in [
        ("normalize_email", Normalize::Email),
        ("normalize_phone", Normalize::Phone),
        ("normalize_id", Normalize::Text),
        ("normalize_lower", Normalize::Lowercase),
        ("normalize_exact", Normalize::Exact),
        ("normalize_digits", Normalize::Digits),
    ] {
        ctx.register_udf(normalizer(name, kind, default_country));
    }
    for udaf in scores::aggregates() {
        ctx.register_udaf(udaf);
    }
    ctx.register_udf(scores::rfm_segment());
    ctx.register_udf(json_get_str());
    ctx.register_udf(json_object::json_build_object());
}

/// The PostgreSQL release Panorama answers as (its `pg_catalog` follows 16).
pub const POSTGRES_VERSION: &str = "16.6";
/// `server_version_num` of [`POSTGRES_VERSION`].
pub const POSTGRES_VERSION_NUM: &str = "160006";

/// `version()` in PostgreSQL's spelling: drivers and BI tools read the
/// release from its leading `PostgreSQL 16.6`. Registered after
/// `datafusion-pg-catalog`'s, which it replaces.
pub fn version() -> ScalarUDF {
    let text = format!(
        "PostgreSQL {POSTGRES_VERSION} (Panorama {}, Apache DataFusion {}) on {}-pc-linux-gnu, \
         compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::Utf8(Some(text.clone())),
            ))
        }),
    )
}

/// `json_get_str(json, path)`: the string (or number, as text) at a dotted
/// `path` of a JSON object; NULL when the text is not JSON or the path is
/// missing. Written here with `serde_json` rather than taken from
/// `datafusion-functions-json`, whose dependencies change the feature set
/// Arrow is built with (see README).
pub fn json_get_str() -> ScalarUDF {
    create_udf(
        "json_get_str",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| -> Result<ColumnarValue> {
            let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let text = |i: usize| -> Result<StringArray> {
                let a = cast(&arrays[i], &DataType::Utf8)?;
                Ok(a.as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .unwrap_or_else(|| StringArray::from(Vec::<Option<&str>>::new())))
            };
            let (json, path) = (text(0)?, text(1)?);
            let out: StringArray = json
                .iter()
                .zip(path.iter())
                .map(|(j, p)| match normalize::json_at(j?, p?.split('.'))? {
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    serde_json::Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect();
            columnar(Arc::new(out), scalar)
        }),
    )
}

/// The SQL name of the function normalising `kind`.
pub fn normalizer_name(kind: Normalize) -> &'static str {
    match kind {
        Normalize::Email => "normalize_email",
        Normalize::Phone => "normalize_phone",
        Normalize::Text => "normalize_id",
        Normalize::Lowercase => "normalize_lower",
        Normalize::Exact => "normalize_exact",
        Normalize::Digits => "normalize_digits",
    }
}

/// A function's result: a scalar when every argument was one.
pub(crate) fn columnar(out: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar && out.len() == 1 {
        Ok(ColumnarValue::Scalar(
            datafusion::common::ScalarValue::try_from_array(&out, 0)?,
        ))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

fn normalizer(name: &str, kind: Normalize, country: Country) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| -> Result<ColumnarValue> {
            let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let input = cast(&arrays[0], &DataType::Utf8)?;
            let input = input
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal("text expected".into())
                })?;
            let out: StringArray = input
                .iter()
                .map(|v| v.and_then(|v| normalize::normalize(kind, v, country)))
                .collect();
            columnar(Arc::new(out), scalar)
        }),
    )
}
