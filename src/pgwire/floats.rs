//! `real` and `double precision` in PostgreSQL's text spelling (its
//! `float8out` with the default `extra_float_digits = 1`): the shortest
//! digits that read back to the same value, positional unless the decimal
//! exponent is below -4 or at least 15 (6 for `real`), where it is written
//! `1e+20` / `1e-05`; `NaN`, `Infinity`, `-Infinity`. pgwire spells them as
//! Rust does (`1.0`, `1e20`, `inf`), which shows in psql and in every
//! text-format client: query results are respelled on their way out
//! ([`super::text_values`]), and `COPY` uses the same functions.

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
pub(super) fn double(value: f64) -> String {
    spell(value, format!("{value:e}"), 15)
}

/// A `real` as PostgreSQL writes it.
pub(super) fn real(value: f32) -> String {
    spell(f64::from(value), format!("{value:e}"), 6)
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
