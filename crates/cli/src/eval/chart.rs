//! A hand-written SVG chart of accuracy against cost: two panels, accuracy vs mean output tokens and
//! accuracy vs seconds per item; one point per (task, method) with its 95% interval as an error bar. Point
//! labels are laid out by [`super::label_layout`] (never overlapping each other, a marker or the axes); a
//! label with no room in its panel is listed under the panels instead. Reports over several tasks get a
//! per-task accuracy × method bar chart below ([`super::bar_chart`]).
//!
//! Public operations:
//! - [`render_svg`]: summaries → a standalone SVG document (string).

use std::fmt::Write;

use super::bar_chart;
use super::label_layout::{layout, Rect};
use super::summary::Summary;

const WIDTH: f64 = 980.0;
const HEIGHT: f64 = 440.0;
const PANEL_W: f64 = 380.0;
const PANEL_H: f64 = 300.0;
const LEFT: f64 = 80.0;
const TOP: f64 = 60.0;
/// Horizontal distance between the two panels' left edges.
const PANEL_STEP: f64 = 480.0;
/// Advance of one 11 px sans-serif character, for label boxes: generous (an average lowercase advance is
/// about 5.6 px), so estimated boxes contain the drawn text.
pub const LABEL_CHAR_W: f64 = 6.6;
/// Line height of an 11 px label (ascent ≈ 9 px above the baseline, descent ≈ 3 px below).
pub const LABEL_LINE_H: f64 = 13.0;
/// Baseline of an 11 px label below the top of its box.
const LABEL_BASELINE: f64 = 10.0;
/// Radius of a point's marker.
const MARKER_R: f64 = 5.0;
/// Where the listing of labels that found no room starts, below the panels' axis titles.
const OVERFLOW_TOP: f64 = HEIGHT - 10.0;
/// How a panel reads its x value from a summary.
type Metric = fn(&Summary) -> f64;
/// Colour-blind-safe palette (Okabe–Ito), one colour per method.
pub const PALETTE: [&str; 8] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];

/// Renders the chart. With summaries of several tasks the labels name the task too, and a bar chart of
/// accuracy per task and method follows the two panels.
pub fn render_svg(summaries: &[Summary]) -> String {
    let mut methods: Vec<&str> = Vec::new();
    for s in summaries {
        if !methods.contains(&s.method.as_str()) {
            methods.push(&s.method);
        }
    }
    let many_tasks = summaries.windows(2).any(|w| w[0].task != w[1].task);
    let mut body = String::new();
    let _ = writeln!(
        body,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">Accuracy against cost (95% Wilson intervals)</text>"#,
        WIDTH / 2.0
    );
    let panels: [(&str, Metric); 2] =
        [("mean output tokens", |s| s.mean_output_tokens), ("seconds per item", |s| s.seconds_per_item)];
    let mut overflow: Vec<(String, &str)> = Vec::new();
    for (i, (xlabel, xval)) in panels.iter().enumerate() {
        let x0 = LEFT + PANEL_STEP * i as f64;
        let xmax = summaries.iter().map(xval).fold(0.0, f64::max);
        for (label, colour) in panel(&mut body, x0, xlabel, xmax, summaries, *xval, &methods, many_tasks) {
            overflow.push((format!("{label} ({xlabel})"), colour));
        }
    }
    let mut height = HEIGHT;
    if !overflow.is_empty() {
        // Labels the panels had no room for, one per line, in their point's colour.
        for (k, (label, colour)) in overflow.iter().enumerate() {
            let y = OVERFLOW_TOP + LABEL_LINE_H * (k + 1) as f64;
            let _ = writeln!(
                body,
                r#"<text class="overflow" x="{LEFT}" y="{y}" font-size="11" fill="{colour}">● {}</text>"#,
                escape(label)
            );
        }
        height = OVERFLOW_TOP + LABEL_LINE_H * (overflow.len() + 1) as f64 + 10.0;
    }
    if many_tasks {
        height += bar_chart::render(&mut body, height, WIDTH, summaries, &methods);
    }
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}

#[allow(clippy::too_many_arguments)]
fn panel<'a>(
    svg: &mut String,
    x0: f64,
    xlabel: &str,
    xmax: f64,
    summaries: &[Summary],
    xval: Metric,
    methods: &'a [&'a str],
    many_tasks: bool,
) -> Vec<(String, &'a str)> {
    let (step, top) = nice_axis(xmax);
    let px = |x: f64| x0 + x / top * PANEL_W;
    let py = |acc: f64| TOP + (1.0 - acc) * PANEL_H;
    let bottom = TOP + PANEL_H;
    let _ =
        writeln!(svg, r##"<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>"##);
    // y axis: accuracy, fixed 0–100% so panels and charts compare at a glance.
    for k in 0..=5 {
        let acc = k as f64 / 5.0;
        let y = py(acc);
        let _ = writeln!(svg, r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/>"##, x0 + PANEL_W);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}%</text>"#,
            x0 - 6.0,
            y + 4.0,
            k * 20
        );
    }
    let ticks = (top / step).round() as usize;
    for k in 0..=ticks {
        let v = step * k as f64;
        let x = px(v);
        let _ = writeln!(svg, r##"<line x1="{x}" y1="{bottom}" x2="{x}" y2="{}" stroke="#444"/>"##, bottom + 5.0);
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            bottom + 18.0,
            tick_label(v, step)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="13" text-anchor="middle">{}</text>"#,
        x0 + PANEL_W / 2.0,
        bottom + 40.0,
        escape(xlabel)
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="13" text-anchor="middle" transform="rotate(-90 {} {})">accuracy</text>"#,
        x0 - 48.0,
        TOP + PANEL_H / 2.0,
        x0 - 48.0,
        TOP + PANEL_H / 2.0
    );
    let colour_of = |s: &Summary| PALETTE[methods.iter().position(|m| *m == s.method).unwrap_or(0) % PALETTE.len()];
    let mut points = Vec::with_capacity(summaries.len());
    for s in summaries {
        let colour = colour_of(s);
        let (x, y) = (px(xval(s)), py(s.accuracy));
        let (ylo, yhi) = (py(s.ci95.0), py(s.ci95.1));
        let _ = writeln!(svg, r#"<line x1="{x}" y1="{ylo}" x2="{x}" y2="{yhi}" stroke="{colour}"/>"#);
        for yc in [ylo, yhi] {
            let _ = writeln!(svg, r#"<line x1="{}" y1="{yc}" x2="{}" y2="{yc}" stroke="{colour}"/>"#, x - 4.0, x + 4.0);
        }
        let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="{MARKER_R}" fill="{colour}"/>"#);
        points.push((x, y));
    }
    let labels: Vec<String> = summaries
        .iter()
        .map(|s| if many_tasks { format!("{} ({})", s.method, s.task) } else { s.method.clone() })
        .collect();
    let sizes: Vec<(f64, f64)> = labels.iter().map(|l| (label_width(l), LABEL_LINE_H)).collect();
    // Inside the frame by a pixel, so no label touches the axes or reaches the tick labels outside it.
    let area = Rect { left: x0 + 1.0, top: TOP + 1.0, right: x0 + PANEL_W - 1.0, bottom: bottom - 1.0 };
    let mut overflow = Vec::new();
    for (((s, label), &(x, y)), spot) in
        summaries.iter().zip(&labels).zip(&points).zip(layout(&points, &sizes, MARKER_R, area))
    {
        let colour = colour_of(s);
        let Some(r) = spot else {
            overflow.push((label.clone(), colour));
            continue;
        };
        // A label pushed away from its point gets a leader line to it.
        if r.distance(x, y) > MARKER_R + 6.0 {
            let (ex, ey) = r.nearest(x, y);
            let _ = writeln!(
                svg,
                r#"<line x1="{x}" y1="{y}" x2="{ex}" y2="{ey}" stroke="{colour}" stroke-width="0.6" stroke-dasharray="2 2"/>"#
            );
        }
        let _ = writeln!(
            svg,
            r#"<text class="point-label" x="{}" y="{}" font-size="11" fill="{colour}">{}</text>"#,
            r.left,
            r.top + LABEL_BASELINE,
            escape(label)
        );
    }
    overflow
}

/// The width a label's box is given (see [`LABEL_CHAR_W`]).
pub fn label_width(label: &str) -> f64 {
    label.chars().count() as f64 * LABEL_CHAR_W + 2.0
}

/// A tick step of 1, 2 or 5 × 10^k giving about five ticks, and the axis end (a multiple of the step
/// at or above `max`·1.1, so the rightmost point is not on the frame).
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 { max * 1.1 } else { 1.0 };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    (step, (max / step).ceil() * step)
}

fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    format!("{v:.decimals$}")
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        for (max, want) in [(0.0, (0.2, 1.0)), (900.0, (200.0, 1000.0)), (3.3, (1.0, 4.0)), (47.0, (20.0, 60.0))] {
            let (step, top) = nice_axis(max);
            assert!((step - want.0).abs() < 1e-9 && (top - want.1).abs() < 1e-9, "{max}: {step} {top}");
        }
        assert_eq!(tick_label(0.4, 0.2), "0.4");
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
