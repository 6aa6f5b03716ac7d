//! Plane geometry for text boxes: connected regions of a bitmap, convex hull, the rotated rectangle of
//! least area (OpenCV's `minAreaRect` + `boxPoints`), point order, and polygon fill tests. Pure
//! functions on pixel coordinates, tested here.

/// A point in pixels (x right, y down).
pub type Pt = [f32; 2];

/// A quadrilateral: top-left, top-right, bottom-right, bottom-left (as PaddleOCR orders them).
pub type Quad = [Pt; 4];

/// The 8-connected regions of `mask` (row-major, `w × h`, non-zero = set), each as the pixels on its
/// left and right ends of every row it covers: their convex hull is the region's hull, which is all
/// the rotated-rectangle fit needs (OpenCV fits the outer contour, whose hull is the same).
/// `limit` bounds the number of regions kept (PaddleOCR's `max_candidates`).
pub fn regions(mask: &[u8], w: usize, h: usize, limit: usize) -> Vec<Vec<[i32; 2]>> {
    let mut label = vec![u32::MAX; w * h];
    let mut out: Vec<Vec<[i32; 2]>> = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if mask[start] == 0 || label[start] != u32::MAX {
            continue;
        }
        if out.len() >= limit {
            break;
        }
        let id = out.len() as u32;
        // row -> (min x, max x) for this region
        let mut ends: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
        label[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            let e = ends.entry(y).or_insert((x, x));
            e.0 = e.0.min(x);
            e.1 = e.1.max(x);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if mask[j] != 0 && label[j] == u32::MAX {
                        label[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        let mut pts = Vec::with_capacity(ends.len() * 2);
        for (y, (x0, x1)) in ends {
            pts.push([x0 as i32, y as i32]);
            if x1 != x0 {
                pts.push([x1 as i32, y as i32]);
            }
        }
        out.push(pts);
    }
    out
}

fn cross(o: [i64; 2], a: [i64; 2], b: [i64; 2]) -> i64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Convex hull (Andrew's monotone chain), counter-clockwise in y-down coordinates, no collinear points.
pub fn convex_hull(points: &[[i32; 2]]) -> Vec<[i32; 2]> {
    let mut p: Vec<[i64; 2]> = points.iter().map(|q| [q[0] as i64, q[1] as i64]).collect();
    p.sort_unstable();
    p.dedup();
    if p.len() < 3 {
        return p.iter().map(|q| [q[0] as i32, q[1] as i32]).collect();
    }
    let mut hull: Vec<[i64; 2]> = Vec::with_capacity(p.len() * 2);
    for &q in &p {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], q) <= 0 {
            hull.pop();
        }
        hull.push(q);
    }
    // the upper hull may not pop into the lower one
    let floor = hull.len() + 1;
    for &q in p.iter().rev().skip(1) {
        while hull.len() >= floor && cross(hull[hull.len() - 2], hull[hull.len() - 1], q) <= 0 {
            hull.pop();
        }
        hull.push(q);
    }
    hull.pop();
    hull.iter().map(|q| [q[0] as i32, q[1] as i32]).collect()
}

/// A rotated rectangle: its four corners (any order) and its side lengths.
#[derive(Debug, Clone, Copy)]
pub struct RotRect {
    pub corners: [Pt; 4],
    pub w: f32,
    pub h: f32,
}

impl RotRect {
    pub fn short_side(&self) -> f32 {
        self.w.min(self.h)
    }
}

/// The rectangle of least area holding `points` (rotating calipers over the hull's edges). `None`
/// for fewer than three non-collinear points (a rectangle of no area, which callers drop anyway).
pub fn min_area_rect(points: &[[i32; 2]]) -> Option<RotRect> {
    let hull = convex_hull(points);
    if hull.len() < 3 {
        return None;
    }
    let hp: Vec<[f64; 2]> = hull.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
    let mut best: Option<(f64, [f64; 2], [f64; 4])> = None;
    for i in 0..hp.len() {
        let (a, b) = (hp[i], hp[(i + 1) % hp.len()]);
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = (dx * dx + dy * dy).sqrt();
        if len == 0.0 {
            continue;
        }
        let u = [dx / len, dy / len];
        let (mut u0, mut u1, mut v0, mut v1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in &hp {
            let pu = p[0] * u[0] + p[1] * u[1];
            let pv = -p[0] * u[1] + p[1] * u[0];
            u0 = u0.min(pu);
            u1 = u1.max(pu);
            v0 = v0.min(pv);
            v1 = v1.max(pv);
        }
        let area = (u1 - u0) * (v1 - v0);
        if best.as_ref().is_none_or(|b| area < b.0 - 1e-9) {
            best = Some((area, u, [u0, u1, v0, v1]));
        }
    }
    let (_, u, [u0, u1, v0, v1]) = best?;
    let at = |pu: f64, pv: f64| -> Pt {
        // inverse of (pu, pv) = (p·u, p·n) with n = (-u.y, u.x)
        [
            (pu * u[0] - pv * u[1]) as f32,
            (pu * u[1] + pv * u[0]) as f32,
        ]
    };
    Some(RotRect {
        corners: [at(u0, v0), at(u1, v0), at(u1, v1), at(u0, v1)],
        w: (u1 - u0) as f32,
        h: (v1 - v0) as f32,
    })
}

/// PaddleOCR's `get_mini_boxes` order: corners sorted by x (stable), then the left pair and the right
/// pair each split by y into top-left, top-right, bottom-right, bottom-left.
pub fn mini_box_order(corners: [Pt; 4]) -> Quad {
    let mut p = corners;
    // a stable sort by x alone, as Python's sorted(key=x[0])
    p.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (i1, i4) = if p[1][1] > p[0][1] { (0, 1) } else { (1, 0) };
    let (i2, i3) = if p[3][1] > p[2][1] { (2, 3) } else { (3, 2) };
    [p[i1], p[i2], p[i3], p[i4]]
}

/// imutils' `order_points_clockwise` (PaddleOCR's `filter_det_res`): the two left-most points by x,
/// each pair sorted by y, giving top-left, top-right, bottom-right, bottom-left.
pub fn order_clockwise(q: Quad) -> Quad {
    let mut p = q;
    p.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (mut l, mut r) = ([p[0], p[1]], [p[2], p[3]]);
    l.sort_by(|a, b| a[1].total_cmp(&b[1]));
    r.sort_by(|a, b| a[1].total_cmp(&b[1]));
    [l[0], r[0], r[1], l[1]]
}

/// Polygon area (shoelace) and perimeter.
pub fn area_perimeter(q: &Quad) -> (f32, f32) {
    let mut a = 0.0f64;
    let mut l = 0.0f64;
    for i in 0..4 {
        let (p, n) = (q[i], q[(i + 1) % 4]);
        a += p[0] as f64 * n[1] as f64 - n[0] as f64 * p[1] as f64;
        l += ((n[0] - p[0]) as f64).hypot((n[1] - p[1]) as f64);
    }
    ((a / 2.0).abs() as f32, l as f32)
}

/// Clipper's `Round`: half away from zero.
fn clipper_round(v: f64) -> i64 {
    if v < 0.0 {
        (v - 0.5) as i64
    } else {
        (v + 0.5) as i64
    }
}

/// PaddleOCR's unclip offset: the quad grown by `delta` with round joins, as pyclipper (Clipper 6.4,
/// `JT_ROUND`, arc tolerance 0.25) computes it — the corners truncated to integers on the way in, every
/// output point rounded — so the rectangle fitted to it afterwards lands on the same pixels as the
/// reference's. Returns the polygon's integer points (order irrelevant to the fit).
pub fn round_offset(q: &Quad, delta: f64) -> Vec<[i32; 2]> {
    let mut src: Vec<[i64; 2]> = Vec::with_capacity(4);
    for p in q {
        let ip = [p[0] as i64, p[1] as i64];
        if src.last() != Some(&ip) {
            src.push(ip);
        }
    }
    while src.len() > 1 && src.first() == src.last() {
        src.pop();
    }
    let n = src.len();
    if n < 3 || delta <= 0.0 {
        return src.iter().map(|p| [p[0] as i32, p[1] as i32]).collect();
    }
    // FixOrientations: Clipper's Area is negative for the other winding; such paths are reversed
    let mut a = 0i64;
    let mut j = n - 1;
    for i in 0..n {
        a += (src[j][0] + src[i][0]) * (src[j][1] - src[i][1]);
        j = i;
    }
    if -a < 0 {
        src.reverse();
    }
    let tol = 0.25f64.min(delta * 0.25);
    let mut steps = std::f64::consts::PI / (1.0 - tol / delta).acos();
    if steps > delta * std::f64::consts::PI {
        steps = delta * std::f64::consts::PI;
    }
    let two_pi = 2.0 * std::f64::consts::PI;
    let (sn, cs) = ((two_pi / steps).sin(), (two_pi / steps).cos());
    let steps_per_rad = steps / two_pi;
    let normals: Vec<[f64; 2]> = (0..n)
        .map(|j| {
            let (p1, p2) = (src[j], src[(j + 1) % n]);
            let (dx, dy) = ((p2[0] - p1[0]) as f64, (p2[1] - p1[1]) as f64);
            if dx == 0.0 && dy == 0.0 {
                return [0.0, 0.0];
            }
            let f = 1.0 / (dx * dx + dy * dy).sqrt();
            [dy * f, -dx * f]
        })
        .collect();
    let at = |p: [i64; 2], nx: f64, ny: f64| -> [i32; 2] {
        [
            clipper_round(p[0] as f64 + nx * delta) as i32,
            clipper_round(p[1] as f64 + ny * delta) as i32,
        ]
    };
    let mut out = Vec::new();
    let mut k = n - 1;
    for j in 0..n {
        let (nk, nj, p) = (normals[k], normals[j], src[j]);
        let mut sin_a = nk[0] * nj[1] - nj[0] * nk[1];
        let cos_a = nk[0] * nj[0] + nj[1] * nk[1];
        if (sin_a * delta).abs() < 1.0 {
            if cos_a > 0.0 {
                out.push(at(p, nk[0], nk[1]));
                k = j;
                continue;
            }
        } else {
            sin_a = sin_a.clamp(-1.0, 1.0);
        }
        if sin_a * delta < 0.0 {
            out.push(at(p, nk[0], nk[1]));
            out.push([p[0] as i32, p[1] as i32]);
            out.push(at(p, nj[0], nj[1]));
        } else {
            let a = sin_a.atan2(nk[0] * nj[0] + nk[1] * nj[1]);
            let st = clipper_round(steps_per_rad * a.abs()).max(1);
            let (mut x, mut y) = (nk[0], nk[1]);
            for _ in 0..st {
                out.push(at(p, x, y));
                let x2 = x;
                x = x * cs - sn * y;
                y = x2 * sn + y * cs;
            }
            out.push(at(p, nj[0], nj[1]));
        }
        k = j;
    }
    out
}

/// PaddleOCR's unclip: the quad offset outwards by `area · ratio / perimeter` with round joins
/// ([`round_offset`]), then fitted with a rotated rectangle again.
pub fn unclip(q: &Quad, ratio: f32) -> Option<RotRect> {
    let (area, perim) = area_perimeter(q);
    if perim <= 0.0 {
        return None;
    }
    let d = area as f64 * ratio as f64 / perim as f64;
    min_area_rect(&round_offset(q, d))
}

/// Whether (x, y) lies inside or on a convex quad (either winding).
pub fn in_convex(q: &[[f32; 2]; 4], x: f32, y: f32) -> bool {
    let (mut pos, mut neg) = (false, false);
    for i in 0..4 {
        let (a, b) = (q[i], q[(i + 1) % 4]);
        let c = (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0]);
        pos |= c > 0.0;
        neg |= c < 0.0;
    }
    !(pos && neg)
}

/// Axis-aligned bounds of a quad: (x1, y1, x2, y2).
pub fn bounds(q: &Quad) -> [f32; 4] {
    let xs = q.iter().map(|p| p[0]);
    let ys = q.iter().map(|p| p[1]);
    [
        xs.clone().fold(f32::MAX, f32::min),
        ys.clone().fold(f32::MAX, f32::min),
        xs.fold(f32::MIN, f32::max),
        ys.fold(f32::MIN, f32::max),
    ]
}

/// The 3×3 homography taking `from[i]` to `to[i]` (OpenCV's `getPerspectiveTransform`), row-major,
/// or `None` when the points are degenerate.
pub fn perspective(from: &Quad, to: &Quad) -> Option<[f64; 9]> {
    // a·x = b for the eight unknowns h0..h7 (h8 = 1)
    let mut a = [[0f64; 9]; 8];
    for i in 0..4 {
        let (x, y) = (from[i][0] as f64, from[i][1] as f64);
        let (u, v) = (to[i][0] as f64, to[i][1] as f64);
        a[i] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u];
        a[i + 4] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v];
    }
    // Gaussian elimination with partial pivoting
    for col in 0..8 {
        let piv = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        let pivot = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot[col];
                for (x, p) in row[col..].iter_mut().zip(&pivot[col..]) {
                    *x -= f * p;
                }
            }
        }
    }
    let mut h = [0f64; 9];
    for i in 0..8 {
        h[i] = a[i][8] / a[i][i];
    }
    h[8] = 1.0;
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tilted_rectangle_is_fitted_exactly() {
        // the integer corners of a rectangle 10 long, 5 wide, along (3, 4)/5
        let pts = [[0, 0], [6, 8], [2, 11], [-4, 3]];
        let r = min_area_rect(&pts).unwrap();
        assert!((r.w * r.h - 50.0).abs() < 1e-3, "{r:?}");
        assert!((r.short_side() - 5.0).abs() < 1e-3);
    }

    #[test]
    fn regions_are_eight_connected_and_counted() {
        #[rustfmt::skip]
        let m = [
            1, 0, 0, 0, 1,
            0, 1, 0, 0, 1,
            0, 0, 0, 0, 0,
            1, 1, 1, 0, 0,
        ];
        let r = regions(&m, 5, 4, 10);
        assert_eq!(r.len(), 3);
        assert_eq!(regions(&m, 5, 4, 2).len(), 2);
    }

    #[test]
    fn an_axis_box_orders_and_unclips() {
        let pts: Vec<[i32; 2]> = (10..=30).flat_map(|x| [[x, 5], [x, 9]]).collect();
        let r = min_area_rect(&pts).unwrap();
        let q = mini_box_order(r.corners);
        assert_eq!(q[0], [10.0, 5.0]);
        assert_eq!(q[2], [30.0, 9.0]);
        let u = unclip(&q, 1.5).unwrap();
        // d = 80 * 1.5 / 48 = 2.5; Clipper rounds the grown sides half away from zero
        // (as pyclipper + cv2.minAreaRect give: x 8..33, y 3..12)
        assert!(
            (u.w - 25.0).abs() < 1e-4 && (u.h - 9.0).abs() < 1e-4,
            "{u:?}"
        );
        let q2 = mini_box_order(u.corners);
        assert_eq!(q2[0], [8.0, 3.0], "{q2:?}");
    }

    #[test]
    fn a_homography_maps_the_corners() {
        let from: Quad = [[0.0, 0.0], [10.0, 0.0], [10.0, 5.0], [0.0, 5.0]];
        let to: Quad = [[2.0, 1.0], [22.0, 3.0], [21.0, 13.0], [1.0, 11.0]];
        let h = perspective(&from, &to).unwrap();
        for i in 0..4 {
            let (x, y) = (from[i][0] as f64, from[i][1] as f64);
            let w = h[6] * x + h[7] * y + h[8];
            let u = (h[0] * x + h[1] * y + h[2]) / w;
            let v = (h[3] * x + h[4] * y + h[5]) / w;
            assert!((u - to[i][0] as f64).abs() < 1e-6 && (v - to[i][1] as f64).abs() < 1e-6);
        }
        assert!(in_convex(&to, 10.0, 7.0));
        assert!(!in_convex(&to, 0.0, 0.0));
    }
}
