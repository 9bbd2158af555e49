//! `real` and `double precision` in PostgreSQL's text spelling (its
//! `float8out` with the default `extra_float_digits = 1`): the shortest
//! digits that read back to the same value, positional unless the decimal
//! exponent is below -4 or at least 15 (6 for `real`), where it is written
//! `1e+20` / `1e-05`; `NaN`, `Infinity`, `-Infinity`. pgwire spells them as
//! Rust does (`1.0`, `1e20`, `inf`), which shows in psql and in every
//! text-format client: query results are respelled here on their way out
//! (see `limits::guard`), and `COPY` uses the same function.

use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::results::{FieldFormat, FieldInfo};
use datafusion_postgres::pgwire::error::PgWireResult;
use datafusion_postgres::pgwire::messages::data::DataRow;

/// `value` (`f64`, or an `f32` widened by [`real`]) spelled as PostgreSQL
/// spells a float whose exponent switches to scientific at `max_exponent`.
fn spell(value: f64, scientific: String, max_exponent: i32) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // `{:e}` gives the shortest round-trip digits: `-1.25e-7`.
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    if !(-4..max_exponent).contains(&exponent) {
        let e_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{mantissa}e{e_sign}{:02}", exponent.abs());
    }
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let point = exponent + 1; // digits before the decimal point
    let text = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else {
        let point = point as usize;
        if digits.len() <= point {
            format!("{digits}{}", "0".repeat(point - digits.len()))
        } else {
            format!("{}.{}", &digits[..point], &digits[point..])
        }
    };
    format!("{sign}{text}")
}

/// A `double precision` as PostgreSQL writes it.
pub fn double(value: f64) -> String {
    spell(value, format!("{value:e}"), 15)
}

/// A `real` as PostgreSQL writes it.
pub fn real(value: f32) -> String {
    spell(f64::from(value), format!("{value:e}"), 6)
}

/// The columns of `fields` whose text a respelling would change.
pub fn float_columns(fields: &[FieldInfo]) -> Vec<(usize, bool)> {
    fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.format() == FieldFormat::Text)
        .filter_map(|(i, f)| match *f.datatype() {
            Type::FLOAT8 => Some((i, true)),
            Type::FLOAT4 => Some((i, false)),
            _ => None,
        })
        .collect()
}

/// `row` with the float columns (`(index, is_double)`) respelled.
pub fn respell(row: DataRow, columns: &[(usize, bool)]) -> PgWireResult<DataRow> {
    let mut out = bytes::BytesMut::with_capacity(row.data.len() + 8);
    let data = &row.data[..];
    let mut at = 0;
    let mut wanted = columns.iter().peekable();
    for index in 0..usize::try_from(row.field_count).unwrap_or(0) {
        let Some(length) = data.get(at..at + 4) else {
            return Ok(row); // not a row pgwire wrote: leave it
        };
        let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        at += 4;
        let value = if length < 0 {
            None
        } else {
            let end = at + length as usize;
            let Some(value) = data.get(at..end) else {
                return Ok(row);
            };
            at = end;
            Some(value)
        };
        let respelled = match (wanted.peek(), value) {
            (Some((i, double_precision)), Some(text)) if *i == index => {
                let text = std::str::from_utf8(text).unwrap_or_default();
                if *double_precision {
                    text.parse::<f64>().ok().map(double)
                } else {
                    text.parse::<f32>().ok().map(real)
                }
            }
            _ => None,
        };
        if wanted.peek().is_some_and(|(i, _)| *i == index) {
            wanted.next();
        }
        match (respelled, value) {
            (Some(text), _) => {
                out.extend_from_slice(&(text.len() as i32).to_be_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            (None, Some(value)) => {
                out.extend_from_slice(&length.to_be_bytes());
                out.extend_from_slice(value);
            }
            (None, None) => out.extend_from_slice(&length.to_be_bytes()),
        }
    }
    Ok(DataRow::new(out, row.field_count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_spelled_as_postgresql_spells_them() {
        // Each pair was printed by PostgreSQL 15 (`SELECT x::float8`).
        for (value, postgres) in [
            (1.0, "1"),
            (300.0, "300"),
            (2.5, "2.5"),
            (-0.125, "-0.125"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (1e20, "1e+20"),
            (1.0 / 3.0, "0.3333333333333333"),
            (-1.5e-7, "-1.5e-07"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(double(value), postgres, "{value}");
        }
        for (value, postgres) in [
            (1.0f32, "1"),
            (0.1, "0.1"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
        ] {
            assert_eq!(real(value), postgres, "{value}");
        }
    }
}
