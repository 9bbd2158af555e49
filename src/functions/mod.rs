//! Panorama's SQL functions, registered on every session by
//! [`register_all`]: `normalize_email(text)`, `normalize_phone(text)`
//! (E.164, with the configured default country), `normalize_id(text)` and
//! `normalize_lower(text)` — the very code identity resolution matches
//! with, so SQL and the identity graph always agree.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use phonenumber::country::Id as Country;

use crate::identity::normalize::{self, Normalize};

/// Register every Panorama function on `ctx`.
pub fn register_all(ctx: &SessionContext, default_country: Country) {
    for (name, kind) in [
        ("normalize_email", Normalize::Email),
        ("normalize_phone", Normalize::Phone),
        ("normalize_id", Normalize::Text),
        ("normalize_lower", Normalize::Lowercase),
    ] {
        ctx.register_udf(normalizer(name, kind, default_country));
    }
}

/// The SQL name of the function normalising `kind`.
pub fn normalizer_name(kind: Normalize) -> &'static str {
    match kind {
        Normalize::Email => "normalize_email",
        Normalize::Phone => "normalize_phone",
        Normalize::Text => "normalize_id",
        Normalize::Lowercase => "normalize_lower",
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
            let out: ArrayRef = Arc::new(out);
            if scalar && out.len() == 1 {
                Ok(ColumnarValue::Scalar(
                    datafusion::common::ScalarValue::try_from_array(&out, 0)?,
                ))
            } else {
                Ok(ColumnarValue::Array(out))
            }
        }),
    )
}
