//! The per-task accuracy × method bar chart of a multi-task report: one group of bars per task (in report
//! order), one bar per method in the method's colour, each with its 95% interval, and a legend of methods.

use std::fmt::Write;

use super::chart::{escape, label_width, LABEL_LINE_H, PALETTE};
use super::summary::Summary;

const LEFT: f64 = 80.0;
const RIGHT_MARGIN: f64 = 20.0;
const PLOT_H: f64 = 240.0;
/// Space above the plot for the title and the legend's first row.
const TITLE_H: f64 = 36.0;
/// Legend swatch size and the gap after it.
const SWATCH: f64 = 10.0;
const SWATCH_GAP: f64 = 4.0;
const LEGEND_SPACING: f64 = 18.0;
/// Below the plot: task names (rotated when they do not fit their group) and the axis title.
const BELOW_H: f64 = 90.0;

/// Draws the chart into `svg` from `top` down, `width` wide; returns the height it used.
pub fn render(svg: &mut String, top: f64, width: f64, summaries: &[Summary], methods: &[&str]) -> f64 {
    let mut tasks = Vec::new();
    for s in summaries {
        if !tasks.contains(&s.task) {
            tasks.push(s.task);
        }
    }
    let plot_w = width - LEFT - RIGHT_MARGIN;
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="16" text-anchor="middle">Accuracy per task and method (95% Wilson intervals)</text>"#,
        width / 2.0,
        top + 22.0
    );
    // Legend rows, wrapped to the plot's width.
    let mut legend_y = top + TITLE_H + 8.0;
    let mut x = LEFT;
    for (i, m) in methods.iter().enumerate() {
        let item_w = SWATCH + SWATCH_GAP + label_width(m);
        if x > LEFT && x + item_w > LEFT + plot_w {
            x = LEFT;
            legend_y += LABEL_LINE_H + 4.0;
        }
        let colour = PALETTE[i % PALETTE.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{}" width="{SWATCH}" height="{SWATCH}" fill="{colour}"/>"#,
            legend_y - SWATCH + 1.0
        );
        let _ = writeln!(
            svg,
            r#"<text class="legend" x="{}" y="{legend_y}" font-size="11">{}</text>"#,
            x + SWATCH + SWATCH_GAP,
            escape(m)
        );
        x += item_w + LEGEND_SPACING;
    }
    let plot_top = legend_y + 14.0;
    let bottom = plot_top + PLOT_H;
    let py = |acc: f64| plot_top + (1.0 - acc) * PLOT_H;
    for k in 0..=5 {
        let y = py(k as f64 / 5.0);
        let _ = writeln!(svg, r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/>"##, LEFT + plot_w);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}%</text>"#,
            LEFT - 6.0,
            y + 4.0,
            k * 20
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{plot_top}" width="{plot_w}" height="{PLOT_H}" fill="none" stroke="#444"/>"##
    );
    let (cx, cy) = (LEFT - 48.0, plot_top + PLOT_H / 2.0);
    let _ = writeln!(
        svg,
        r#"<text x="{cx}" y="{cy}" font-size="13" text-anchor="middle" transform="rotate(-90 {cx} {cy})">accuracy</text>"#
    );
    let group_w = plot_w / tasks.len().max(1) as f64;
    let bar_w = group_w * 0.8 / methods.len().max(1) as f64;
    let rotate = tasks.iter().any(|t| label_width(t.as_str()) > group_w - 4.0);
    for (ti, task) in tasks.iter().enumerate() {
        let g0 = LEFT + group_w * ti as f64 + group_w * 0.1;
        for (mi, m) in methods.iter().enumerate() {
            let Some(s) = summaries.iter().find(|s| s.task == *task && s.method == *m) else { continue };
            let colour = PALETTE[mi % PALETTE.len()];
            let bx = g0 + bar_w * mi as f64;
            let y = py(s.accuracy);
            let _ = writeln!(
                svg,
                r#"<rect class="bar" x="{bx}" y="{y}" width="{}" height="{}" fill="{colour}"><title>{} / {}: {:.1}% of {}</title></rect>"#,
                bar_w * 0.9,
                bottom - y,
                escape(task.as_str()),
                escape(m),
                s.accuracy * 100.0,
                s.n
            );
            let mid = bx + bar_w * 0.45;
            let (ylo, yhi) = (py(s.ci95.0), py(s.ci95.1));
            let _ = writeln!(svg, r##"<line x1="{mid}" y1="{ylo}" x2="{mid}" y2="{yhi}" stroke="#222"/>"##);
            let cap = (bar_w * 0.25).min(4.0);
            for yc in [ylo, yhi] {
                let _ = writeln!(
                    svg,
                    r##"<line x1="{}" y1="{yc}" x2="{}" y2="{yc}" stroke="#222"/>"##,
                    mid - cap,
                    mid + cap
                );
            }
        }
        let gx = LEFT + group_w * (ti as f64 + 0.5);
        if rotate {
            let ty = bottom + 14.0;
            let _ = writeln!(
                svg,
                r#"<text class="task" x="{gx}" y="{ty}" font-size="11" text-anchor="end" transform="rotate(-35 {gx} {ty})">{}</text>"#,
                escape(task.as_str())
            );
        } else {
            let _ = writeln!(
                svg,
                r#"<text class="task" x="{gx}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
                bottom + 16.0,
                escape(task.as_str())
            );
        }
    }
    plot_top - top + PLOT_H + BELOW_H
}
