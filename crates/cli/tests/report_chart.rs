//! The report chart's geometry, read back from the SVG: point labels never overlap each other, any marker,
//! or the panel frames (and so the axes and tick labels outside them), even when methods sit on top of each
//! other; labels without room are listed below the panels; a multi-task report adds a bar per task × method.

use latentmas_cli::eval::chart::{label_width, render_svg, LABEL_LINE_H};
use latentmas_cli::eval::label_layout::Rect;
use latentmas_cli::eval::{Summary, Task};
use regex::Regex;

fn summary(task: Task, method: &str, accuracy: f64, tokens: f64, seconds: f64) -> Summary {
    let n = 100;
    let correct = (accuracy * n as f64).round() as usize;
    Summary {
        task,
        method: method.into(),
        n,
        correct,
        accuracy,
        ci95: latentmas_cli::eval::summary::wilson_interval(correct, n),
        mean_output_tokens: tokens,
        mean_latent_steps: 0.0,
        seconds_per_item: seconds,
    }
}

fn attr(tag: &str, name: &str) -> f64 {
    let re = Regex::new(&format!(r#"\s{name}="([-0-9.e]+)""#)).unwrap();
    re.captures(tag).unwrap_or_else(|| panic!("{name} in {tag}"))[1].parse().unwrap()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&")
}

/// Boxes of the texts of `class`, as the chart sizes them (baseline 10 below the top, one line high).
fn text_boxes(svg: &str, class: &str) -> Vec<(String, Rect)> {
    let re = Regex::new(&format!(r#"<text class="{class}"([^>]*)>([^<]*)</text>"#)).unwrap();
    re.captures_iter(svg)
        .map(|c| {
            let text = unescape(&c[2]);
            let (x, y) = (attr(&c[1], "x"), attr(&c[1], "y"));
            (text.clone(), Rect::new(x, y - 10.0, label_width(&text), LABEL_LINE_H))
        })
        .collect()
}

/// The two scatter panels' frames.
fn frames(svg: &str) -> Vec<Rect> {
    let re = Regex::new(
        r##"<rect x="([-0-9.]+)" y="([-0-9.]+)" width="([-0-9.]+)" height="([-0-9.]+)" fill="none" stroke="#444"/>"##,
    )
    .unwrap();
    re.captures_iter(svg)
        .map(|c| Rect::new(c[1].parse().unwrap(), c[2].parse().unwrap(), c[3].parse().unwrap(), c[4].parse().unwrap()))
        .take(2)
        .collect()
}

fn markers(svg: &str) -> Vec<(f64, f64)> {
    let re = Regex::new(r#"<circle cx="([-0-9.]+)" cy="([-0-9.]+)""#).unwrap();
    re.captures_iter(svg).map(|c| (c[1].parse().unwrap(), c[2].parse().unwrap())).collect()
}

/// Every point label lies strictly inside one panel frame, clear of the others and of every marker.
fn assert_labels_clear(svg: &str) -> usize {
    let labels = text_boxes(svg, "point-label");
    let frames = frames(svg);
    assert_eq!(frames.len(), 2);
    let marks = markers(svg);
    for (i, (text, a)) in labels.iter().enumerate() {
        assert!(
            frames.iter().any(|f| a.left > f.left && a.right < f.right && a.top > f.top && a.bottom < f.bottom),
            "label {text:?} {a:?} crosses a panel frame (axis)"
        );
        for (other, b) in &labels[i + 1..] {
            assert!(!a.overlaps(b), "label {text:?} {a:?} overlaps {other:?} {b:?}");
        }
        for &(x, y) in &marks {
            assert!(a.distance(x, y) >= 5.0, "label {text:?} {a:?} covers the marker at ({x}, {y})");
        }
    }
    labels.len()
}

#[test]
fn three_close_methods_on_one_task_get_clear_labels() {
    let s = [
        summary(Task::Gsm8k, "single", 0.62, 410.0, 3.1),
        summary(Task::Gsm8k, "text-sequential-t0.6-k20-p0.95-s0-max2048", 0.63, 415.0, 3.15),
        summary(Task::Gsm8k, "latent-sequential-m10-t0.6-k20-p0.95-s0-max2048", 0.625, 412.0, 3.12),
    ];
    let svg = render_svg(&s);
    assert_eq!(assert_labels_clear(&svg), 6, "three labels in each panel");
    assert!(!svg.contains("class=\"bar\""), "one task: no bar chart");
    assert!(!svg.contains("class=\"overflow\""));
}

#[test]
fn points_on_the_axes_keep_their_labels_inside() {
    // 0% and 100% at zero cost and at the largest cost: the corners of both panels.
    let s = [
        summary(Task::Aime2024, "a-method-with-a-long-label", 0.0, 0.0, 0.0),
        summary(Task::Aime2024, "another-long-method-label", 1.0, 0.0, 0.0),
        summary(Task::Aime2024, "third", 1.0, 900.0, 9.0),
        summary(Task::Aime2024, "fourth-method", 0.0, 900.0, 9.0),
    ];
    assert_eq!(assert_labels_clear(&render_svg(&s)), 8);
}

#[test]
fn nine_tasks_by_three_methods_get_clear_labels_and_a_bar_chart() {
    let methods = ["single", "text-sequential", "latent-sequential-m10"];
    let mut s = Vec::new();
    for (ti, task) in Task::ALL.iter().enumerate() {
        for (mi, m) in methods.iter().enumerate() {
            // Close together within a task, as the three methods often are.
            s.push(summary(
                *task,
                m,
                0.5 + 0.01 * mi as f64 + 0.02 * ti as f64,
                300.0 + 3.0 * mi as f64,
                2.0 + 0.02 * mi as f64,
            ));
        }
    }
    let svg = render_svg(&s);
    let placed = assert_labels_clear(&svg);
    let listed = text_boxes(&svg, "overflow");
    assert_eq!(placed + listed.len(), 2 * 27, "every label is drawn once per panel, in a panel or below");
    let height = attr(&svg[..svg.find('>').unwrap()], "height");
    for (text, r) in &listed {
        assert!(r.top > 400.0 && r.bottom < height, "listed label {text:?} below the panels, inside the SVG");
    }
    for (i, (_, a)) in listed.iter().enumerate() {
        assert!(listed[i + 1..].iter().all(|(_, b)| !a.overlaps(b)));
    }
    assert_eq!(svg.matches("class=\"bar\"").count(), 27, "a bar per task × method");
    assert_eq!(text_boxes(&svg, "legend").len(), 3);
    let tasks = Regex::new(r#"<text class="task"[^>]*>([^<]*)</text>"#).unwrap();
    let names: Vec<String> = tasks.captures_iter(&svg).map(|c| c[1].to_string()).collect();
    assert_eq!(names, Task::ALL.iter().map(|t| t.as_str().to_string()).collect::<Vec<_>>());
    // Bars lie below the scatter panels and inside the document.
    let bar =
        Regex::new(r#"<rect class="bar" x="[-0-9.]+" y="([-0-9.]+)" width="[-0-9.]+" height="([-0-9.]+)""#).unwrap();
    for c in bar.captures_iter(&svg) {
        let (y, h): (f64, f64) = (c[1].parse().unwrap(), c[2].parse().unwrap());
        assert!(y > 440.0 && y + h < height && h >= 0.0, "bar at {y}+{h} inside the chart below the panels");
    }
}

#[test]
fn a_crowded_panel_lists_what_does_not_fit_instead_of_overlapping() {
    let s: Vec<Summary> = (0..60)
        .map(|i| summary(Task::Gsm8k, &format!("method-number-{i:02}-with-settings"), 0.5, 100.0, 1.0))
        .collect();
    let svg = render_svg(&s);
    let placed = assert_labels_clear(&svg);
    let listed = text_boxes(&svg, "overflow").len();
    assert!(listed > 0, "60 long labels cannot all fit in a panel");
    assert_eq!(placed + listed, 120);
}
