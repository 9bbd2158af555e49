//! Text-format result values respelled on their way to the client, where
//! pgwire's and arrow-pg's spelling is not PostgreSQL's: `real` and `double
//! precision` as PostgreSQL writes them ([`super::floats`]), and
//! `timestamptz` in the connection's time zone (`SET TIME ZONE`), as
//! PostgreSQL renders it: `2026-01-15 11:00:00+01`. arrow-pg writes every
//! instant in UTC. Binary values are instants and stay as they are.

use chrono::{DateTime, FixedOffset, Offset, TimeZone};
use datafusion::arrow::array::timezone::Tz;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::results::{FieldFormat, FieldInfo};
use datafusion_postgres::pgwire::error::PgWireResult;
use datafusion_postgres::pgwire::messages::data::DataRow;

use super::floats::{double, real};

/// How one column's text is respelled.
#[derive(Debug, Clone)]
pub(super) enum Respell {
    Double,
    Real,
    /// A `timestamptz` shown in this zone.
    Instant(Tz),
}

/// The columns of `fields` whose text a respelling would change, for a
/// connection whose time zone is `zone` (`None`: UTC).
pub(super) fn columns(fields: &[FieldInfo], zone: Option<&str>) -> Vec<(usize, Respell)> {
    let zone: Option<Tz> = zone
        .filter(|z| !z.eq_ignore_ascii_case("utc"))
        .and_then(|z| z.parse().ok());
    fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.format() == FieldFormat::Text)
        .filter_map(|(i, f)| match *f.datatype() {
            Type::FLOAT8 => Some((i, Respell::Double)),
            Type::FLOAT4 => Some((i, Respell::Real)),
            Type::TIMESTAMPTZ => zone.map(|z| (i, Respell::Instant(z))),
            _ => None,
        })
        .collect()
}

impl Respell {
    fn apply(&self, text: &str) -> Option<String> {
        match self {
            Respell::Double => text.parse::<f64>().ok().map(double),
            Respell::Real => text.parse::<f32>().ok().map(real),
            Respell::Instant(zone) => in_zone(text, zone),
        }
    }
}

/// `2025-01-01 00:02:06.143996+00` (as arrow-pg writes an instant) in
/// `zone`: `2025-01-01 01:02:06.143996+01`, the fraction kept as written.
fn in_zone(text: &str, zone: &Tz) -> Option<String> {
    let instant = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z").ok()?;
    let local = zone.from_utc_datetime(&instant.naive_utc());
    let fraction = text
        .find('.')
        .map(|dot| {
            let digits = &text[dot..];
            let end = digits.find(['+', '-']).unwrap_or(digits.len());
            &digits[..end]
        })
        .unwrap_or_default();
    let offset = local.offset().fix();
    Some(format!(
        "{}{fraction}{}",
        local.format("%Y-%m-%d %H:%M:%S"),
        postgres_offset(offset)
    ))
}

/// An offset as PostgreSQL writes it: `+01`, `-03`, `+05:30`.
fn postgres_offset(offset: FixedOffset) -> String {
    let seconds = offset.local_minus_utc();
    let sign = if seconds < 0 { '-' } else { '+' };
    let (h, m, s) = (
        seconds.abs() / 3600,
        seconds.abs() / 60 % 60,
        seconds.abs() % 60,
    );
    match (m, s) {
        (0, 0) => format!("{sign}{h:02}"),
        (m, 0) => format!("{sign}{h:02}:{m:02}"),
        (m, s) => format!("{sign}{h:02}:{m:02}:{s:02}"),
    }
}

/// `row` with the columns (`(index, how)`, in index order) respelled.
pub(super) fn respell(row: DataRow, columns: &[(usize, Respell)]) -> PgWireResult<DataRow> {
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
            (Some((i, how)), Some(text)) if *i == index => {
                how.apply(std::str::from_utf8(text).unwrap_or_default())
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
    fn instants_are_shown_in_the_zone_as_postgresql_shows_them() {
        let zone = |z: &str| z.parse::<Tz>().unwrap();
        // Each expected text was printed by PostgreSQL 15 after `SET TIME
        // ZONE` to that zone.
        for (utc, tz, postgres) in [
            (
                "2025-01-01 00:02:06.143996+00",
                "Europe/Paris",
                "2025-01-01 01:02:06.143996+01",
            ),
            (
                "2025-07-01 10:00:00+00",
                "Europe/Paris",
                "2025-07-01 12:00:00+02",
            ),
            (
                "2026-01-15 10:00:00.5+00",
                "America/Sao_Paulo",
                "2026-01-15 07:00:00.5-03",
            ),
            (
                "2026-01-15 10:00:00+00",
                "Asia/Kolkata",
                "2026-01-15 15:30:00+05:30",
            ),
        ] {
            assert_eq!(
                in_zone(utc, &zone(tz)).as_deref(),
                Some(postgres),
                "{utc} {tz}"
            );
        }
        assert_eq!(in_zone("infinity", &zone("Europe/Paris")), None);
    }
}
