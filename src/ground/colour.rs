//! Colour names from a box's pixels: each pixel is named from its hue, saturation and value, and
//! the names are counted in a histogram weighted towards the box centre (the object) and away from
//! the colour that dominates the box border (the background the box also covers: a table, a wall,
//! white paper).

use image::RgbImage;

use crate::geometry::BBox;

/// The colour words of [`super::parse::COLOURS`], in that order.
pub use super::parse::COLOURS;

/// Pixels sampled per box side at most; enough for a histogram, cheap for 4K frames.
const SAMPLES_PER_SIDE: u32 = 48;
/// Outer fraction of the box treated as border (background evidence).
const BORDER: f32 = 0.12;
/// A border colour holding more than this share of the border is taken to be background.
const BACKGROUND_SHARE: f32 = 0.35;
/// Weight left to pixels of the background colour inside the box.
const BACKGROUND_WEIGHT: f32 = 0.15;

/// Hue in degrees, saturation and value in 0..1.
pub fn rgb_to_hsv(r: u8, g: u8, b: u8) -> (f32, f32, f32) {
    let (r, g, b) = (r as f32 / 255.0, g as f32 / 255.0, b as f32 / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let h = if d <= f32::EPSILON {
        0.0
    } else if max == r {
        60.0 * (((g - b) / d).rem_euclid(6.0))
    } else if max == g {
        60.0 * ((b - r) / d + 2.0)
    } else {
        60.0 * ((r - g) / d + 4.0)
    };
    let s = if max <= f32::EPSILON { 0.0 } else { d / max };
    (h, s, max)
}

/// Index into [`COLOURS`] of one pixel's colour name.
pub fn name_pixel(r: u8, g: u8, b: u8) -> usize {
    let (h, s, v) = rgb_to_hsv(r, g, b);
    let idx = |name: &str| COLOURS.iter().position(|c| *c == name).unwrap_or(0);
    if v < 0.22 {
        return idx("black");
    }
    if s < 0.22 {
        return if v > 0.78 {
            idx("white")
        } else if v < 0.35 {
            idx("black")
        } else {
            idx("grey")
        };
    }
    // dark warm hues are what people call brown (chocolate, wood, leather)
    if v < 0.4 && !(70.0..255.0).contains(&h) {
        return idx("brown");
    }
    let name = match h {
        h if !(9.0..335.0).contains(&h) => {
            if s < 0.5 && v > 0.7 {
                "pink"
            } else if v < 0.45 {
                "brown"
            } else {
                "red"
            }
        }
        h if h < 42.0 => {
            if v < 0.55 || (s < 0.45 && v < 0.75) {
                "brown"
            } else {
                "orange"
            }
        }
        h if h < 70.0 => {
            if v < 0.45 {
                "brown"
            } else {
                "yellow"
            }
        }
        h if h < 165.0 => "green",
        h if h < 255.0 => "blue",
        h if h < 290.0 => "purple",
        _ => "pink",
    };
    idx(name)
}

/// Share of each colour name in a box, after background suppression; sums to 1 (or all zero for
/// an empty box).
#[derive(Debug, Clone, PartialEq)]
pub struct ColourHistogram {
    pub shares: [f32; COLOURS.len()],
    /// The border colour that was suppressed, if one dominated.
    pub background: Option<usize>,
}

impl ColourHistogram {
    pub fn share(&self, name: &str) -> f32 {
        COLOURS
            .iter()
            .position(|c| *c == name)
            .map_or(0.0, |i| self.shares[i])
    }

    /// The most common colour name.
    pub fn dominant(&self) -> Option<&'static str> {
        let (i, s) = self
            .shares
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))?;
        (*s > 0.0).then_some(COLOURS[i])
    }

    /// How well `name` describes the object, 0..1: its share, scaled so that a third of the
    /// object in that colour (a red mug with a white logo and highlights) already counts fully,
    /// neighbouring hues (orange for red) counting 0.3, and lowered when another colour dominates.
    pub fn score(&self, name: &str) -> f32 {
        let near: &[&str] = match name {
            "red" => &["orange", "pink"],
            "orange" => &["red", "yellow"],
            "yellow" => &["orange"],
            "pink" => &["red", "purple"],
            "purple" => &["blue", "pink"],
            "brown" => &["orange", "black"],
            "grey" => &["white", "black"],
            // a white animal or car in shade is partly grey
            "white" => &["grey"],
            _ => &[],
        };
        let s = self.share(name) + 0.3 * near.iter().map(|n| self.share(n)).sum::<f32>();
        // another colour dominating the object (an orange ball asked for as "red") costs
        let top = self.shares.iter().copied().fold(0.0, f32::max);
        let dominance = if top > 0.0 {
            (s / top).min(1.0).sqrt()
        } else {
            0.0
        };
        (s / 0.35).min(1.0) * dominance
    }
}

/// The colour histogram of the pixels in `bbox` (clipped to the image).
pub fn histogram(img: &RgbImage, bbox: &BBox) -> ColourHistogram {
    let mut out = ColourHistogram {
        shares: [0.0; COLOURS.len()],
        background: None,
    };
    let (w, h) = (img.width() as f32, img.height() as f32);
    let x1 = bbox.x1.clamp(0.0, w);
    let x2 = bbox.x2.clamp(0.0, w);
    let y1 = bbox.y1.clamp(0.0, h);
    let y2 = bbox.y2.clamp(0.0, h);
    if x2 - x1 < 1.0 || y2 - y1 < 1.0 {
        return out;
    }
    let nx = SAMPLES_PER_SIDE.min((x2 - x1) as u32).max(1);
    let ny = SAMPLES_PER_SIDE.min((y2 - y1) as u32).max(1);
    // (name, normalised position from the centre -1..1 on each axis)
    let mut samples = Vec::with_capacity((nx * ny) as usize);
    for j in 0..ny {
        for i in 0..nx {
            let fx = (i as f32 + 0.5) / nx as f32;
            let fy = (j as f32 + 0.5) / ny as f32;
            let px = (x1 + fx * (x2 - x1)).min(w - 1.0) as u32;
            let py = (y1 + fy * (y2 - y1)).min(h - 1.0) as u32;
            let p = img.get_pixel(px, py).0;
            samples.push((name_pixel(p[0], p[1], p[2]), fx, fy));
        }
    }
    let is_border = |fx: f32, fy: f32| {
        let inner = BORDER..=1.0 - BORDER;
        !inner.contains(&fx) || !inner.contains(&fy)
    };
    let mut border = [0f32; COLOURS.len()];
    let mut n_border = 0f32;
    for &(c, fx, fy) in &samples {
        if is_border(fx, fy) {
            border[c] += 1.0;
            n_border += 1.0;
        }
    }
    if n_border > 0.0 {
        let (bi, bn) = border
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &0.0));
        if bn / n_border > BACKGROUND_SHARE {
            out.background = Some(bi);
        }
    }
    let mut total = 0f32;
    for &(c, fx, fy) in &samples {
        // centre weighting: 1 at the centre, 0.2 at the corners
        let dx = (fx - 0.5) * 2.0;
        let dy = (fy - 0.5) * 2.0;
        let mut wgt = (1.0 - 0.4 * (dx * dx + dy * dy)).max(0.2);
        if is_border(fx, fy) {
            wgt *= 0.5;
        }
        if Some(c) == out.background {
            wgt *= BACKGROUND_WEIGHT;
        }
        out.shares[c] += wgt;
        total += wgt;
    }
    if total > 0.0 {
        out.shares.iter_mut().for_each(|s| *s /= total);
    }
    // If the object itself has the background colour (a white cup on a white table), the
    // suppressed colour is still what remains most: keep it as the object's colour.
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn patch(bg: [u8; 3], fg: [u8; 3], w: u32, h: u32, inner: f32) -> RgbImage {
        let mut img = RgbImage::from_pixel(w, h, Rgb(bg));
        let (mx, my) = (
            (w as f32 * (1.0 - inner) / 2.0) as u32,
            (h as f32 * (1.0 - inner) / 2.0) as u32,
        );
        for y in my..h - my {
            for x in mx..w - mx {
                img.put_pixel(x, y, Rgb(fg));
            }
        }
        img
    }

    fn whole(img: &RgbImage) -> BBox {
        BBox::from([0.0, 0.0, img.width() as f32, img.height() as f32])
    }

    #[test]
    fn pixels_get_the_names_people_use() {
        let name = |r, g, b| COLOURS[name_pixel(r, g, b)];
        assert_eq!(name(220, 30, 30), "red");
        assert_eq!(name(240, 130, 20), "orange");
        assert_eq!(name(240, 220, 40), "yellow");
        assert_eq!(name(40, 180, 60), "green");
        assert_eq!(name(40, 80, 220), "blue");
        assert_eq!(name(130, 50, 200), "purple");
        assert_eq!(name(250, 150, 190), "pink");
        assert_eq!(name(110, 60, 25), "brown");
        assert_eq!(name(70, 30, 45), "brown");
        assert_eq!(name(10, 10, 10), "black");
        assert_eq!(name(250, 250, 250), "white");
        assert_eq!(name(128, 128, 128), "grey");
    }

    #[test]
    fn an_object_on_a_background_is_named_by_the_object() {
        // a red object covering 36% of its box on a white table: white dominates the raw pixel
        // count, but the border says white is background
        let img = patch([245, 245, 245], [200, 20, 25], 100, 80, 0.6);
        let h = histogram(&img, &whole(&img));
        assert_eq!(h.background.map(|i| COLOURS[i]), Some("white"));
        assert_eq!(h.dominant(), Some("red"));
        assert!(h.score("red") > 0.9, "{h:?}");
        assert!(h.score("blue") < 0.1);
        // the same on a green lawn
        let img = patch([40, 150, 50], [30, 60, 210], 90, 90, 0.5);
        let h = histogram(&img, &whole(&img));
        assert_eq!(h.dominant(), Some("blue"));
        assert!(h.score("green") < h.score("blue"));
    }

    #[test]
    fn an_object_of_the_background_colour_keeps_its_colour() {
        let img = RgbImage::from_pixel(50, 50, Rgb([250, 250, 250]));
        let h = histogram(&img, &whole(&img));
        assert_eq!(h.dominant(), Some("white"));
    }

    #[test]
    fn boxes_outside_the_image_are_clipped_or_empty() {
        let img = patch([0, 0, 0], [240, 220, 30], 40, 40, 0.8);
        let h = histogram(&img, &BBox::from([-100.0, -100.0, 500.0, 500.0]));
        assert_eq!(h.dominant(), Some("yellow"));
        let h = histogram(&img, &BBox::from([100.0, 100.0, 200.0, 200.0]));
        assert_eq!(h.dominant(), None);
    }
}
