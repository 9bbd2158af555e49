//! `json_build_object(k1, v1, …)`: PostgreSQL's function, a JSON object as
//! text (Panorama's JSON columns are text). Numbers and booleans keep their
//! JSON type, everything else is a string, NULL is `null`. Registered on
//! every session, and used by computed ingest mappings to pack file fields
//! into a JSON column ([`crate::ingest::computed`]).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The `json_build_object` function.
pub fn json_build_object() -> ScalarUDF {
    ScalarUDF::new_from_impl(JsonBuildObject {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let args = args.args;
        if !args.len().is_multiple_of(2) {
            return Err(DataFusionError::Plan(
                "json_build_object takes an even number of arguments (key, value, …)".into(),
            ));
        }
        let n = args
            .iter()
            .find_map(|a| match a {
                ColumnarValue::Array(a) => Some(a.len()),
                ColumnarValue::Scalar(_) => None,
            })
            .unwrap_or(1);
        let arrays = ColumnarValue::values_to_arrays(&args)?;
        let mut out = Vec::with_capacity(n);
        for row in 0..n {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return Err(DataFusionError::Execution(
                        "json_build_object: a key is NULL".into(),
                    ));
                }
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                object.insert(key.to_string(), json_value(&value));
            }
            out.push(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(
            Arc::new(StringArray::from(out)) as ArrayRef
        ))
    }
}

/// A SQL value as JSON: numbers and booleans as themselves, NULL as
/// `null`, anything else as its text.
fn json_value(value: &ScalarValue) -> serde_json::Value {
    use serde_json::Value;
    if value.is_null() {
        return Value::Null;
    }
    match value {
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int8(Some(_))
        | ScalarValue::Int16(Some(_))
        | ScalarValue::Int32(Some(_))
        | ScalarValue::Int64(Some(_))
        | ScalarValue::UInt8(Some(_))
        | ScalarValue::UInt16(Some(_))
        | ScalarValue::UInt32(Some(_))
        | ScalarValue::UInt64(Some(_))
        | ScalarValue::Float32(Some(_))
        | ScalarValue::Float64(Some(_)) => value
            .to_string()
            .parse::<serde_json::Number>()
            .map_or_else(|_| Value::String(value.to_string()), Value::Number),
        other => Value::String(other.to_string()),
    }
}
