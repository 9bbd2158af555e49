//! Charts drawn on the server as SVG: a line with its margin of error as
//! a band, the RFM grid as a heat map, and a person's identity graph. No
//! script runs in the browser; every label is escaped by maud.

use maud::{Markup, html};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const PAD: f64 = 36.0;

/// A point of a line chart: its label (a month, a day), value and margin
/// of error (0 for none).
#[derive(Debug, Clone)]
pub(super) struct Point {
    pub label: String,
    pub value: f64,
    pub moe: f64,
}

/// A line through `points` with a band of ± their margin of error.
pub(super) fn line(title: &str, points: &[Point]) -> Markup {
    if points.is_empty() {
        return html! { p.empty { "No data for " (title) " yet." } };
    }
    let low = points
        .iter()
        .map(|p| p.value - p.moe)
        .fold(f64::INFINITY, f64::min);
    let high = points
        .iter()
        .map(|p| p.value + p.moe)
        .fold(f64::NEG_INFINITY, f64::max);
    let (low, high) = if (high - low).abs() < 1e-9 {
        (low - 1.0, high + 1.0)
    } else {
        (low, high)
    };
    let n = points.len();
    let x = |i: usize| {
        if n == 1 {
            WIDTH / 2.0
        } else {
            PAD + (WIDTH - 2.0 * PAD) * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| HEIGHT - PAD - (HEIGHT - 2.0 * PAD) * (v - low) / (high - low);
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.value)))
        .collect();
    let upper = points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.value + p.moe)));
    let lower = points
        .iter()
        .enumerate()
        .rev()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.value - p.moe)));
    let band: Vec<String> = upper.chain(lower).collect();
    let step = n.div_ceil(8).max(1);
    html! {
        svg.chart role="img" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } aria-label=(title) {
            title { (title) }
            line.axis x1=(PAD) y1=(HEIGHT - PAD) x2=(WIDTH - PAD) y2=(HEIGHT - PAD) {}
            text.tick x="4" y=(y(high) + 4.0) { (format!("{high:.1}")) }
            text.tick x="4" y=(y(low) + 4.0) { (format!("{low:.1}")) }
            polygon.band points=(band.join(" ")) {}
            polyline.line points=(line.join(" ")) {}
            @for (i, p) in points.iter().enumerate() {
                circle.dot cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(p.value))) r="3" {
                    title { (p.label) ": " (format!("{:.1}", p.value)) @if p.moe > 0.0 { " ± " (format!("{:.1}", p.moe)) } }
                }
                @if i % step == 0 {
                    text.tick x=(format!("{:.1}", x(i) - 20.0)) y=(HEIGHT - 12.0) { (p.label) }
                }
            }
        }
    }
}

/// The RFM grid: `cells[r - 1][fm - 1]` = (profiles, segment name).
pub(super) fn heat_map(cells: &[[(u64, String); 5]; 5]) -> Markup {
    let max = cells
        .iter()
        .flatten()
        .map(|c| c.0)
        .max()
        .unwrap_or(0)
        .max(1);
    let size = 92.0;
    html! {
        svg.chart role="img" viewBox={ "0 0 " (size * 5.0 + 60.0) " " (size * 5.0 + 50.0) } aria-label="RFM grid" {
            title { "RFM grid: recency (rows) by frequency and monetary (columns)" }
            @for r in (1..=5).rev() {
                @let row = 5 - r;
                text.tick x="4" y=(row as f64 * size + size / 2.0) { "R" (r) }
                @for fm in 1..=5 {
                    @let (count, name) = &cells[r - 1][fm - 1];
                    @let shade = 0.08 + 0.85 * (*count as f64 / max as f64);
                    @let (cx, cy) = (40.0 + (fm - 1) as f64 * size, row as f64 * size);
                    rect.cell x=(cx) y=(cy) width=(size - 2.0) height=(size - 2.0)
                        fill-opacity=(format!("{shade:.2}")) {
                        title { (name) ": " (count) " profiles" }
                    }
                    text.cell-label x=(cx + 4.0) y=(cy + 18.0) { (name) }
                    text.cell-count x=(cx + 4.0) y=(cy + 40.0) { (count) }
                }
            }
            @for fm in 1..=5 {
                text.tick x=(40.0 + (fm - 1) as f64 * size + size / 2.0 - 12.0) y=(size * 5.0 + 20.0) { "FM" (fm) }
            }
        }
    }
}

/// A person's identity graph: `labels` of the nodes on a circle, `edges`
/// between them (with their tooltip: the records that linked them), and
/// refused links to identifiers outside, drawn dashed.
pub(super) fn graph(
    labels: &[String],
    edges: &[((usize, usize), String)],
    refused: &[(usize, String)],
) -> Markup {
    let n = labels.len().max(1);
    let (cx, cy, radius) = (320.0, 200.0, 140.0);
    let at = |i: usize| {
        let angle = std::f64::consts::TAU * i as f64 / n as f64 - std::f64::consts::FRAC_PI_2;
        (cx + radius * angle.cos(), cy + radius * angle.sin())
    };
    let outside = |i: usize, k: usize| {
        let (x, y) = at(i);
        let (dx, dy) = (x - cx, y - cy);
        let scale = 1.45 + 0.15 * k as f64;
        (cx + dx * scale, cy + dy * scale)
    };
    html! {
        svg.chart.graph role="img" viewBox="0 0 640 420" aria-label="Identity graph" {
            title { "Identity graph: identifiers, the records that linked them, and refused links (dashed)" }
            @for ((a, b), why) in edges {
                @let ((x1, y1), (x2, y2)) = (at(*a), at(*b));
                line.edge x1=(format!("{x1:.1}")) y1=(format!("{y1:.1}")) x2=(format!("{x2:.1}")) y2=(format!("{y2:.1}")) {
                    title { (why) }
                }
            }
            @for (k, (node, why)) in refused.iter().enumerate() {
                @let ((x1, y1), (x2, y2)) = (at(*node), outside(*node, k));
                line.refused x1=(format!("{x1:.1}")) y1=(format!("{y1:.1}")) x2=(format!("{x2:.1}")) y2=(format!("{y2:.1}")) {
                    title { "refused: " (why) }
                }
                text.tick x=(format!("{:.1}", x2 - 30.0)) y=(format!("{:.1}", y2)) { "refused" }
            }
            @for (i, label) in labels.iter().enumerate() {
                @let (x, y) = at(i);
                circle.node cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="7" {}
                text.node-label x=(format!("{:.1}", x + 10.0)) y=(format!("{:.1}", y + 4.0)) { (label) }
            }
        }
    }
}
