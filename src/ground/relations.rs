//! Spatial relations between two boxes in one image, each scored 0..1, and the image-plane keys
//! the selectors order candidates by.
//!
//! A single camera gives no depth, so "nearest" and "in front of" use the ground-plane cue: of
//! two objects standing on the same floor or table, the one whose bottom edge is lower in the image
//! is closer to the camera.

use crate::geometry::BBox;

use super::parse::{RelationKind, Selector, Side};

fn overlap_1d(a1: f32, a2: f32, b1: f32, b2: f32) -> f32 {
    (a2.min(b2) - a1.max(b1)).max(0.0)
}

/// Share of the narrower box's width that the two boxes share horizontally.
fn x_overlap(a: &BBox, b: &BBox) -> f32 {
    overlap_1d(a.x1, a.x2, b.x1, b.x2) / a.width().min(b.width()).max(1e-3)
}

fn y_overlap(a: &BBox, b: &BBox) -> f32 {
    overlap_1d(a.y1, a.y2, b.y1, b.y2) / a.height().min(b.height()).max(1e-3)
}

/// Gap between the two boxes (0 when they touch or overlap), in units of their mean size.
fn gap(a: &BBox, b: &BBox) -> f32 {
    let dx = (a.x1.max(b.x1) - a.x2.min(b.x2)).max(0.0);
    let dy = (a.y1.max(b.y1) - a.y2.min(b.y2)).max(0.0);
    let size = ((a.width() + a.height() + b.width() + b.height()) / 4.0).max(1.0);
    dx.hypot(dy) / size
}

fn smooth_step(x: f32) -> f32 {
    x.clamp(0.0, 1.0)
}

/// How well "`c` is <kind> `a`" holds, 0..1. `img_w`/`img_h` scale distances.
pub fn relation_score(kind: RelationKind, c: &BBox, a: &BBox) -> f32 {
    let (cx, cy) = c.center();
    let (ax, ay) = a.center();
    let contained = c.intersection(a) / c.area().max(1e-3);
    match kind {
        RelationKind::NextTo => {
            // close, and not the same thing seen twice
            let near = (-gap(c, a) / 0.75).exp();
            let same = c.iou(a);
            near * (1.0 - same).max(0.0)
        }
        RelationKind::LeftOf => {
            let d = (ax - cx) / ((a.width() + c.width()) / 2.0).max(1.0);
            smooth_step(d) * (0.5 + 0.5 * y_overlap(c, a).min(1.0))
        }
        RelationKind::RightOf => {
            let d = (cx - ax) / ((a.width() + c.width()) / 2.0).max(1.0);
            smooth_step(d) * (0.5 + 0.5 * y_overlap(c, a).min(1.0))
        }
        RelationKind::Above => {
            let d = (ay - cy) / ((a.height() + c.height()) / 2.0).max(1.0);
            smooth_step(d) * (0.5 + 0.5 * x_overlap(c, a).min(1.0))
        }
        RelationKind::Below => {
            let d = (cy - ay) / ((a.height() + c.height()) / 2.0).max(1.0);
            smooth_step(d) * (0.5 + 0.5 * x_overlap(c, a).min(1.0))
        }
        RelationKind::On => {
            // resting on top: bottom edge near the anchor's top, or inside the anchor's box (a cup
            // on a table is drawn inside the table's box), above its bottom
            let resting = (1.0 - ((c.y2 - a.y1).abs() / c.height().max(1.0))).max(0.0)
                * x_overlap(c, a).min(1.0);
            let inside = if contained > 0.6 && cy < a.y2 {
                contained
            } else {
                0.0
            };
            resting.max(inside).min(1.0) * (1.0 - c.iou(a)).max(0.0).max(0.2)
        }
        RelationKind::In => {
            if contained > 0.5 && c.area() < a.area() {
                contained
            } else {
                0.0
            }
        }
        RelationKind::InFrontOf => {
            // overlapping in x, bottom edge lower (closer), and not far away
            let closer = smooth_step((c.y2 - a.y2) / (a.height() * 0.25).max(1.0));
            closer * x_overlap(c, a).clamp(0.2, 1.0) * (-gap(c, a)).exp()
        }
        RelationKind::Behind => {
            let farther = smooth_step((a.y2 - c.y2) / (a.height() * 0.25).max(1.0));
            farther * x_overlap(c, a).clamp(0.2, 1.0) * (-gap(c, a)).exp()
        }
    }
}

/// The value a selector ranks by; larger is better. `None` for ordinals (handled by position).
pub fn selector_key(sel: &Selector, b: &BBox, img_w: f32, img_h: f32) -> f32 {
    let (cx, cy) = b.center();
    match sel {
        Selector::Side { side } | Selector::Ordinal { from: side, .. } => match side {
            Side::Left => -cx,
            Side::Right => cx,
            Side::Top => -cy,
            Side::Bottom => cy,
        },
        Selector::Middle => -((cx - img_w / 2.0).abs() / img_w.max(1.0)),
        // lower bottom edge = closer; area breaks ties between objects on the same line
        Selector::Nearest => {
            b.y2 / img_h.max(1.0) + 0.1 * (b.area() / (img_w * img_h).max(1.0)).sqrt()
        }
        Selector::Farthest => {
            -(b.y2 / img_h.max(1.0) + 0.1 * (b.area() / (img_w * img_h).max(1.0)).sqrt())
        }
        Selector::Biggest => b.area(),
        Selector::Smallest => -b.area(),
    }
}

/// How far apart two keys must be, relative to the image, for a selector to tell two objects apart.
pub fn selector_tie(sel: &Selector, a: f32, b: f32, img_w: f32, img_h: f32) -> bool {
    let d = (a - b).abs();
    match sel {
        Selector::Side { side } | Selector::Ordinal { from: side, .. } => {
            let span = if matches!(side, Side::Left | Side::Right) {
                img_w
            } else {
                img_h
            };
            d < 0.02 * span
        }
        Selector::Middle => d < 0.02,
        Selector::Nearest | Selector::Farthest => d < 0.01,
        Selector::Biggest | Selector::Smallest => d < 0.05 * a.abs().max(b.abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox::from([x1, y1, x2, y2])
    }

    #[test]
    fn left_and_right_of() {
        let anchor = b(100.0, 100.0, 200.0, 200.0);
        let left = b(0.0, 110.0, 80.0, 190.0);
        let right = b(220.0, 110.0, 300.0, 190.0);
        assert!(relation_score(RelationKind::LeftOf, &left, &anchor) > 0.9);
        assert_eq!(relation_score(RelationKind::LeftOf, &right, &anchor), 0.0);
        assert!(relation_score(RelationKind::RightOf, &right, &anchor) > 0.9);
    }

    #[test]
    fn next_to_prefers_the_closer_one() {
        let anchor = b(100.0, 100.0, 200.0, 200.0);
        let close = b(205.0, 100.0, 300.0, 200.0);
        let far = b(600.0, 100.0, 700.0, 200.0);
        assert!(
            relation_score(RelationKind::NextTo, &close, &anchor)
                > 3.0 * relation_score(RelationKind::NextTo, &far, &anchor)
        );
        // an object is not next to itself
        assert!(relation_score(RelationKind::NextTo, &anchor, &anchor) < 0.01);
    }

    #[test]
    fn on_a_table_and_in_a_bowl() {
        let table = b(0.0, 200.0, 600.0, 400.0);
        let cup_on = b(100.0, 150.0, 160.0, 230.0);
        let cup_off = b(100.0, 0.0, 160.0, 60.0);
        assert!(relation_score(RelationKind::On, &cup_on, &table) > 0.5);
        assert!(relation_score(RelationKind::On, &cup_off, &table) < 0.1);
        let bowl = b(0.0, 0.0, 100.0, 100.0);
        let apple = b(20.0, 20.0, 60.0, 60.0);
        assert!(relation_score(RelationKind::In, &apple, &bowl) > 0.9);
        assert_eq!(relation_score(RelationKind::In, &bowl, &apple), 0.0);
    }

    #[test]
    fn in_front_of_and_behind_use_the_bottom_edge() {
        let car = b(100.0, 100.0, 300.0, 200.0);
        let dog_front = b(150.0, 150.0, 220.0, 260.0);
        let dog_behind = b(150.0, 60.0, 200.0, 120.0);
        assert!(relation_score(RelationKind::InFrontOf, &dog_front, &car) > 0.5);
        assert_eq!(
            relation_score(RelationKind::InFrontOf, &dog_behind, &car),
            0.0
        );
        assert!(relation_score(RelationKind::Behind, &dog_behind, &car) > 0.5);
    }

    #[test]
    fn selectors_rank_and_tie() {
        let (w, h) = (640.0, 480.0);
        let a = b(10.0, 300.0, 60.0, 470.0);
        let c = b(400.0, 100.0, 450.0, 150.0);
        let left = Selector::Side { side: Side::Left };
        assert!(selector_key(&left, &a, w, h) > selector_key(&left, &c, w, h));
        assert!(
            selector_key(&Selector::Nearest, &a, w, h) > selector_key(&Selector::Nearest, &c, w, h)
        );
        assert!(
            selector_key(&Selector::Biggest, &a, w, h) > selector_key(&Selector::Biggest, &c, w, h)
        );
        assert!(selector_tie(&left, -100.0, -105.0, w, h));
        assert!(!selector_tie(&left, -100.0, -200.0, w, h));
    }
}
