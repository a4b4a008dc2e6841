//! Placing point labels on a chart so that none overlaps another label, any point's marker, or the edge of
//! the plot area (and with it the axes and their tick labels, which lie outside that area).
//!
//! Greedy and exact for what it checks: each label takes, among candidate boxes on a fine grid over the
//! whole area, the free one nearest to its point. A label that finds no free box is reported as `None`, for
//! the caller to list elsewhere; so the result never overlaps, however crowded the chart.

/// An axis-aligned box in SVG user units (y grows downwards).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub left: f64,
    pub top: f64,
    pub right: f64,
    pub bottom: f64,
}

impl Rect {
    pub fn new(left: f64, top: f64, width: f64, height: f64) -> Self {
        Rect { left, top, right: left + width, bottom: top + height }
    }

    /// True when the interiors intersect (touching edges do not count).
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.left < o.right && o.left < self.right && self.top < o.bottom && o.top < self.bottom
    }

    pub fn inside(&self, area: &Rect) -> bool {
        self.left >= area.left && self.right <= area.right && self.top >= area.top && self.bottom <= area.bottom
    }

    /// Distance from `(x, y)` to the nearest point of the box (0 inside).
    pub fn distance(&self, x: f64, y: f64) -> f64 {
        let dx = (self.left - x).max(0.0).max(x - self.right);
        let dy = (self.top - y).max(0.0).max(y - self.bottom);
        dx.hypot(dy)
    }

    /// The point of the box's outline nearest to `(x, y)` (where a leader line ends).
    pub fn nearest(&self, x: f64, y: f64) -> (f64, f64) {
        (x.clamp(self.left, self.right), y.clamp(self.top, self.bottom))
    }
}

/// Grid step of the candidate positions, in user units.
const STEP: f64 = 4.0;
/// Clearance kept between a label and its own marker.
const GAP: f64 = 3.0;

/// One box per label (`sizes[i]` = (width, height) of label i, for the marker at `points[i]` of radius
/// `marker_r`), all inside `area`, pairwise disjoint and clear of every marker; `None` where none fits.
pub fn layout(points: &[(f64, f64)], sizes: &[(f64, f64)], marker_r: f64, area: Rect) -> Vec<Option<Rect>> {
    let pad = marker_r + GAP;
    let markers: Vec<Rect> =
        points.iter().map(|&(x, y)| Rect { left: x - pad, top: y - pad, right: x + pad, bottom: y + pad }).collect();
    let mut placed: Vec<Rect> = Vec::with_capacity(points.len());
    let mut out = Vec::with_capacity(points.len());
    for (&(x, y), &(w, h)) in points.iter().zip(sizes) {
        let mut best: Option<(f64, Rect)> = None;
        let mut top = area.top;
        while top + h <= area.bottom {
            let mut left = area.left;
            while left + w <= area.right {
                let r = Rect::new(left, top, w, h);
                // Prefer boxes right of the point, then left, at the same distance (reading order).
                let d = r.distance(x, y) + if r.left + 0.5 < x { 0.5 } else { 0.0 };
                if best.is_none_or(|(bd, _)| d < bd)
                    && !markers.iter().any(|m| m.overlaps(&r))
                    && !placed.iter().any(|p| p.overlaps(&r))
                {
                    best = Some((d, r));
                }
                left += STEP;
            }
            top += STEP;
        }
        let chosen = best.map(|(_, r)| r);
        if let Some(r) = chosen {
            placed.push(r);
        }
        out.push(chosen);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(points: &[(f64, f64)], sizes: &[(f64, f64)], area: Rect) -> Vec<Option<Rect>> {
        let got = layout(points, sizes, 5.0, area);
        let boxes: Vec<Rect> = got.iter().flatten().copied().collect();
        for (i, a) in boxes.iter().enumerate() {
            assert!(a.inside(&area), "{a:?} leaves the area");
            for b in &boxes[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
            for &(x, y) in points {
                assert!(a.distance(x, y) >= 5.0, "{a:?} covers the marker at ({x}, {y})");
            }
        }
        got
    }

    #[test]
    fn coincident_points_get_disjoint_labels_near_them() {
        let area = Rect::new(0.0, 0.0, 380.0, 300.0);
        let points = [(200.0, 150.0), (201.0, 150.5), (200.5, 149.0)];
        let got = check(&points, &[(90.0, 13.0), (60.0, 13.0), (120.0, 13.0)], area);
        for (r, &(x, y)) in got.iter().zip(&points) {
            let r = r.expect("room for three labels");
            assert!(r.distance(x, y) < 40.0, "{r:?} stays near its point");
        }
    }

    #[test]
    fn points_on_the_frame_keep_labels_inside() {
        let area = Rect::new(80.0, 60.0, 380.0, 300.0);
        // Corners and edges: 0 tokens at 0% and 100%, the largest value at either.
        let points = [(80.0, 360.0), (80.0, 60.0), (460.0, 60.0), (460.0, 360.0), (81.0, 359.0), (459.0, 61.0)];
        let got = check(&points, &[(150.0, 13.0); 6], area);
        assert!(got.iter().all(Option::is_some));
    }

    #[test]
    fn a_full_area_reports_the_labels_that_do_not_fit() {
        // The marker keeps 42..58 × 12..28 clear: two rows of 30-wide labels fit on each side (the area is
        // 40 high), none above or below it (12 high strips for 13 high labels).
        let area = Rect::new(0.0, 0.0, 100.0, 40.0);
        let points = [(50.0, 20.0); 8];
        let got = check(&points, &[(30.0, 13.0); 8], area);
        assert_eq!(got.iter().filter(|r| r.is_some()).count(), 4, "{got:?}");
        assert!(got.iter().flatten().all(|r| r.right <= 42.0 || r.left >= 58.0), "beside the marker: {got:?}");
        assert!(got[4..].iter().all(Option::is_none));
    }
}
