//! Voice-of-the-customer and RFM functions for SQL:
//!
//! - `nps(score)`: % promoters (9–10) minus % detractors (0–6) of 0–10
//!   answers, in −100..100; `nps_moe(score)`: its 95 % margin of error, in
//!   NPS points (1.96 × the standard error of the promoter = +100,
//!   passive = 0, detractor = −100 variable);
//! - `csat(score)`: % of 4–5 answers on a 1–5 scale;
//! - `ces(score)`: mean effort on a 1–7 scale;
//! - `rfm_segment(r, f, m)`: the named RFM segment of 1–5 scores.
//!
//! An answer outside its scale is an error naming the value (never silently
//! counted); NULL answers are ignored, and an empty group gives NULL.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, ColumnarValue, ScalarUDF, Volatility, create_udaf, create_udf,
};

/// Which score an accumulator computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nps,
    NpsMoe,
    Csat,
    Ces,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Nps => "nps",
            Kind::NpsMoe => "nps_moe",
            Kind::Csat => "csat",
            Kind::Ces => "ces",
        }
    }

    fn scale(self) -> (i64, i64) {
        match self {
            Kind::Nps | Kind::NpsMoe => (0, 10),
            Kind::Csat => (1, 5),
            Kind::Ces => (1, 7),
        }
    }
}

/// Counts that merge by addition: `a` (promoters, satisfied answers or the
/// sum of efforts), `b` (detractors) and `n` (answers).
#[derive(Debug)]
struct Scores {
    kind: Kind,
    a: i64,
    b: i64,
    n: i64,
}

impl Accumulator for Scores {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = cast(&values[0], &DataType::Int64)?;
        let (low, high) = self.kind.scale();
        for score in values.as_primitive::<Int64Type>().iter().flatten() {
            if !(low..=high).contains(&score) {
                return exec_err!(
                    "{}: score {score} is outside the {low}..{high} scale",
                    self.kind.name()
                );
            }
            self.n += 1;
            match self.kind {
                Kind::Nps | Kind::NpsMoe => {
                    self.a += i64::from(score >= 9);
                    self.b += i64::from(score <= 6);
                }
                Kind::Csat => self.a += i64::from(score >= 4),
                Kind::Ces => self.a += score,
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let column = |i: usize| states[i].as_primitive::<Int64Type>().clone();
        let (a, b, n) = (column(0), column(1), column(2));
        for i in 0..n.len() {
            self.a += a.value(i);
            self.b += b.value(i);
            self.n += n.value(i);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Int64(Some(self.a)),
            ScalarValue::Int64(Some(self.b)),
            ScalarValue::Int64(Some(self.n)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.n == 0 {
            return Ok(ScalarValue::Float64(None));
        }
        let n = self.n as f64;
        let (p, d) = (self.a as f64 / n, self.b as f64 / n);
        let value = match self.kind {
            Kind::Nps => 100.0 * (p - d),
            Kind::NpsMoe => {
                let variance = (p + d) - (p - d).powi(2);
                100.0 * 1.96 * (variance / n).sqrt()
            }
            Kind::Csat => 100.0 * p,
            Kind::Ces => p,
        };
        Ok(ScalarValue::Float64(Some(value)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

fn score_udaf(kind: Kind) -> AggregateUDF {
    create_udaf(
        kind.name(),
        vec![DataType::Int64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(move |_| {
            Ok(Box::new(Scores {
                kind,
                a: 0,
                b: 0,
                n: 0,
            }))
        }),
        Arc::new(vec![DataType::Int64, DataType::Int64, DataType::Int64]),
    )
}

/// `nps`, `nps_moe`, `csat` and `ces`.
pub fn aggregates() -> Vec<AggregateUDF> {
    [Kind::Nps, Kind::NpsMoe, Kind::Csat, Kind::Ces]
        .into_iter()
        .map(score_udaf)
        .collect()
}

/// The RFM segment of recency, frequency and monetary scores (1–5, 5 best),
/// from recency and FM = (F + M) / 2 rounded half up:
///
/// | R \ FM | 1 | 2 | 3 | 4 | 5 |
/// |---|---|---|---|---|---|
/// | 5 | New Customers | Potential Loyalists | Potential Loyalists | Champions | Champions |
/// | 4 | Promising | Potential Loyalists | Potential Loyalists | Loyal Customers | Loyal Customers |
/// | 3 | About To Sleep | About To Sleep | Need Attention | Loyal Customers | Loyal Customers |
/// | 2 | Hibernating | Hibernating | At Risk | At Risk | Can't Lose Them |
/// | 1 | Lost | Lost | At Risk | At Risk | Can't Lose Them |
pub fn segment(r: i64, f: i64, m: i64) -> Result<&'static str> {
    for (name, v) in [("r", r), ("f", f), ("m", m)] {
        if !(1..=5).contains(&v) {
            return exec_err!("rfm_segment: {name} score {v} is outside 1..5");
        }
    }
    let fm = (f + m + 1) / 2;
    Ok(match (r, fm) {
        (5, 1) => "New Customers",
        (4, 1) => "Promising",
        (4..=5, 2..=3) => "Potential Loyalists",
        (5, 4..=5) => "Champions",
        (3..=4, 4..=5) => "Loyal Customers",
        (3, 3) => "Need Attention",
        (3, 1..=2) => "About To Sleep",
        (1..=2, 5) => "Can't Lose Them",
        (1..=2, 3..=4) => "At Risk",
        (2, _) => "Hibernating",
        _ => "Lost",
    })
}

/// `rfm_segment(r, f, m)`.
pub fn rfm_segment() -> ScalarUDF {
    create_udf(
        "rfm_segment",
        vec![DataType::Int64, DataType::Int64, DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| -> Result<ColumnarValue> {
            let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let ints: Vec<Int64Array> = arrays
                .iter()
                .map(|a| cast(a, &DataType::Int64).map(|c| c.as_primitive::<Int64Type>().clone()))
                .collect::<std::result::Result<_, _>>()?;
            let mut out = Vec::with_capacity(ints[0].len());
            for i in 0..ints[0].len() {
                if ints.iter().any(|c| c.is_null(i)) {
                    out.push(None);
                } else {
                    out.push(Some(segment(
                        ints[0].value(i),
                        ints[1].value(i),
                        ints[2].value(i),
                    )?));
                }
            }
            super::columnar(Arc::new(StringArray::from(out)), scalar)
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_score_pair_has_its_documented_segment() {
        // The table in the doc comment, row by row (R = 5 first), FM 1..5.
        let table = [
            [
                "New Customers",
                "Potential Loyalists",
                "Potential Loyalists",
                "Champions",
                "Champions",
            ],
            [
                "Promising",
                "Potential Loyalists",
                "Potential Loyalists",
                "Loyal Customers",
                "Loyal Customers",
            ],
            [
                "About To Sleep",
                "About To Sleep",
                "Need Attention",
                "Loyal Customers",
                "Loyal Customers",
            ],
            [
                "Hibernating",
                "Hibernating",
                "At Risk",
                "At Risk",
                "Can't Lose Them",
            ],
            ["Lost", "Lost", "At Risk", "At Risk", "Can't Lose Them"],
        ];
        for (row, r) in table.iter().zip((1..=5).rev()) {
            for (expected, fm) in row.iter().zip(1..=5) {
                assert_eq!(segment(r, fm, fm).unwrap(), *expected, "r={r} fm={fm}");
            }
        }
        // FM rounds half up: F = 4, M = 5 → FM 5.
        assert_eq!(segment(5, 4, 5).unwrap(), "Champions");
        assert_eq!(segment(5, 3, 4).unwrap(), "Champions");
        let err = segment(6, 1, 1).unwrap_err().to_string();
        assert!(err.contains("r score 6 is outside 1..5"), "{err}");
    }
}
