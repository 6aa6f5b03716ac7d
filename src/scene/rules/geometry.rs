//! Plane geometry in normalised frame coordinates (0..1, origin top-left, y down): a track's
//! reference point, which side of a line a point is on, whether a move went through a segment,
//! and point-in-polygon. Kept apart from [`crate::geometry`], which is pixel boxes shared by
//! detection and tracking; these are only the rules' shapes.

use crate::geometry::BBox;

/// A normalised point `(x, y)`.
pub(super) type Pt = (f32, f32);

/// Which side of a directed line a point is on: `A` left of it as seen on screen, `B` right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    A,
    B,
}

/// Bottom-centre of the box, normalised: where the object touches the ground, which is what a
/// zone painted on the ground or a line across a path is about. `None` for a box that is not
/// finite.
pub(super) fn ref_point(b: &BBox, w: f32, h: f32) -> Option<Pt> {
    let p = ((b.x1 + b.x2) / 2.0 / w, b.y2 / h);
    (p.0.is_finite() && p.1.is_finite()).then_some(p)
}

fn cross(o: Pt, a: Pt, b: Pt) -> f32 {
    (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
}

/// The side of the line a→b that `p` is on; `None` on the line itself, so touching a line is
/// never half a crossing.
pub(super) fn side(a: Pt, b: Pt, p: Pt) -> Option<Side> {
    let c = cross(a, b, p);
    if c.abs() < 1e-9 {
        None
    } else if c < 0.0 {
        Some(Side::A)
    } else {
        Some(Side::B)
    }
}

/// Whether the move p→q passes through segment a–b. The caller knows p and q are on opposite
/// sides of the line through a and b; this checks a and b are not both on one side of p→q.
pub(super) fn segments_cross(p: Pt, q: Pt, a: Pt, b: Pt) -> bool {
    let d1 = cross(p, q, a);
    let d2 = cross(p, q, b);
    d1 * d2 <= 0.0
}

/// Even-odd ray casting; a point exactly on an edge may land either way, which the debounce and
/// the reference point's frame-to-frame motion make harmless.
pub(super) fn inside(poly: &[Pt], p: Pt) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > p.1) != (yj > p.1) && p.0 < (xj - xi) * (p.1 - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Twice the signed area (shoelace); zero when every point is on one line.
pub(super) fn twice_area(poly: &[Pt]) -> f32 {
    (0..poly.len())
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum()
}
