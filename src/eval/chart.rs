//! A hand-written SVG chart of accuracy against cost: two panels, accuracy vs mean output tokens and
//! accuracy vs seconds per item; one point per (task, method) with its 95% interval as an error bar.
//!
//! Public operations:
//! - [`render_svg`]: summaries → a standalone SVG document (string).

use std::fmt::Write;

use super::summary::Summary;

const WIDTH: f64 = 980.0;
const HEIGHT: f64 = 440.0;
const PANEL_W: f64 = 380.0;
const PANEL_H: f64 = 300.0;
const LEFT: f64 = 80.0;
const TOP: f64 = 60.0;
/// Horizontal distance between the two panels' left edges.
const PANEL_STEP: f64 = 480.0;
/// Approximate advance of one 11 px sans-serif character, for label overlap checks.
const LABEL_CHAR_W: f64 = 6.2;
/// Line height of an 11 px label.
const LABEL_LINE_H: f64 = 13.0;
/// How a panel reads its x value from a summary.
type Metric = fn(&Summary) -> f64;
/// Colour-blind-safe palette (Okabe–Ito), one colour per method.
const PALETTE: [&str; 8] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];

/// Renders the chart. With summaries of several tasks the labels name the task too.
pub fn render_svg(summaries: &[Summary]) -> String {
    let mut methods: Vec<&str> = Vec::new();
    for s in summaries {
        if !methods.contains(&s.method.as_str()) {
            methods.push(&s.method);
        }
    }
    let many_tasks = summaries.windows(2).any(|w| w[0].task != w[1].task);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">Accuracy against cost (95% Wilson intervals)</text>"#,
        WIDTH / 2.0
    );
    let panels: [(&str, Metric); 2] =
        [("mean output tokens", |s| s.mean_output_tokens), ("seconds per item", |s| s.seconds_per_item)];
    for (i, (xlabel, xval)) in panels.iter().enumerate() {
        let x0 = LEFT + PANEL_STEP * i as f64;
        let xmax = summaries.iter().map(xval).fold(0.0, f64::max);
        panel(&mut svg, x0, xlabel, xmax, summaries, *xval, &methods, many_tasks);
    }
    svg.push_str("</svg>\n");
    svg
}

#[allow(clippy::too_many_arguments)]
fn panel(
    svg: &mut String,
    x0: f64,
    xlabel: &str,
    xmax: f64,
    summaries: &[Summary],
    xval: Metric,
    methods: &[&str],
    many_tasks: bool,
) {
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
    // Label boxes already placed in this panel: (left, right, top, bottom).
    let mut placed: Vec<(f64, f64, f64, f64)> = Vec::new();
    for s in summaries {
        let colour = PALETTE[methods.iter().position(|m| *m == s.method).unwrap_or(0) % PALETTE.len()];
        let (x, y) = (px(xval(s)), py(s.accuracy));
        let (ylo, yhi) = (py(s.ci95.0), py(s.ci95.1));
        let _ = writeln!(svg, r#"<line x1="{x}" y1="{ylo}" x2="{x}" y2="{yhi}" stroke="{colour}"/>"#);
        for yc in [ylo, yhi] {
            let _ = writeln!(svg, r#"<line x1="{}" y1="{yc}" x2="{}" y2="{yc}" stroke="{colour}"/>"#, x - 4.0, x + 4.0);
        }
        let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="5" fill="{colour}"/>"#);
        let label = if many_tasks { format!("{} ({})", s.method, s.task) } else { s.method.clone() };
        // Labels of points in the right part of a panel go to their left, so they stay inside the chart.
        let (lx, anchor) = if x > x0 + 0.6 * PANEL_W { (x - 7.0, "end") } else { (x + 7.0, "start") };
        let ly = free_row(&mut placed, lx, y - 7.0, label.chars().count() as f64 * LABEL_CHAR_W, anchor == "end");
        let _ = writeln!(
            svg,
            r#"<text x="{lx}" y="{ly}" font-size="11" fill="{colour}" text-anchor="{anchor}">{}</text>"#,
            escape(&label)
        );
    }
}

/// The first baseline at or below `y` (in steps of one text line) where a label of `width` does not
/// overlap the labels already placed; records its box. Greedy, which is enough for a handful of methods.
fn free_row(placed: &mut Vec<(f64, f64, f64, f64)>, x: f64, y: f64, width: f64, ends_at_x: bool) -> f64 {
    let (left, right) = if ends_at_x { (x - width, x) } else { (x, x + width) };
    let mut base = y;
    for _ in 0..20 {
        let (top, bottom) = (base - LABEL_LINE_H + 2.0, base + 2.0);
        let clash = placed.iter().any(|&(l, r, t, b)| left < r && l < right && top < b && t < bottom);
        if !clash {
            break;
        }
        base += LABEL_LINE_H;
    }
    placed.push((left, right, base - LABEL_LINE_H + 2.0, base + 2.0));
    base
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

fn escape(s: &str) -> String {
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
