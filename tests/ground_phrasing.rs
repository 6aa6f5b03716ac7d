//! Free phrasings against scenes whose objects are given (no detector): words beyond the labels
//! ("taxi", "van", "pony"), near-miss labels, distance and order superlatives, plurals, materials,
//! and the text read on objects ("the box that says FRAGILE", "the bottle labelled Bombay").

use std::sync::Arc;

use image::{Rgb, RgbImage};
use lookout::geometry::BBox;
use lookout::ground::{GroundResult, Grounder, Object, Status};

fn coco() -> Vec<String> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco.txt");
    std::fs::read_to_string(p)
        .expect("coco.txt")
        .lines()
        .map(str::to_string)
        .collect()
}

/// One object: label, box, fill colour, text read on it.
struct Thing {
    label: &'static str,
    bbox: [f32; 4],
    fill: [u8; 3],
    text: Option<&'static str>,
}

fn thing(label: &'static str, bbox: [f32; 4], fill: [u8; 3]) -> Thing {
    Thing {
        label,
        bbox,
        fill,
        text: None,
    }
}

fn with_text(mut t: Thing, text: &'static str) -> Thing {
    t.text = Some(text);
    t
}

/// A grey floor with each thing painted as a filled rectangle (inset, so the box border shows
/// the floor as a detector's box would).
fn scene(things: &[Thing]) -> (RgbImage, Vec<Object>) {
    let mut img = RgbImage::from_pixel(640, 480, Rgb([128, 128, 128]));
    let mut objects = Vec::new();
    for t in things {
        let [x1, y1, x2, y2] = t.bbox;
        let (ix, iy) = ((x2 - x1) * 0.1, (y2 - y1) * 0.1);
        for y in (y1 + iy) as u32..(y2 - iy) as u32 {
            for x in (x1 + ix) as u32..(x2 - ix) as u32 {
                img.put_pixel(x, y, Rgb(t.fill));
            }
        }
        objects.push(Object {
            label: Arc::from(t.label),
            score: 0.7,
            bbox: BBox::from(t.bbox),
            track_id: Some(objects.len() as u64 + 1),
            text: t.text.map(str::to_string),
        });
    }
    (img, objects)
}

fn ground(things: &[Thing], instruction: &str) -> GroundResult {
    let (img, objects) = scene(things);
    let mut g = Grounder::new(&coco(), None).expect("grounder");
    g.ground(&img, &objects, instruction).expect("ground")
}

/// The track id (1-based index into the things) of the target, or a panic saying what came back.
fn found(r: &GroundResult) -> u64 {
    assert_eq!(r.status, Status::Found, "{}: {r:?}", r.instruction);
    r.target.as_ref().and_then(|t| t.track_id).unwrap()
}

const YELLOW: [u8; 3] = [240, 210, 30];
const WHITE: [u8; 3] = [245, 245, 245];
const BROWN: [u8; 3] = [110, 60, 25];
const BLUE: [u8; 3] = [40, 70, 210];

#[test]
fn the_box_that_says_fragile() {
    let boxes = [
        with_text(
            thing("suitcase", [20.0, 200.0, 180.0, 360.0], BROWN),
            "THIS WAY UP",
        ),
        with_text(
            thing("suitcase", [240.0, 200.0, 400.0, 360.0], BROWN),
            "FRAGILE",
        ),
        thing("suitcase", [460.0, 200.0, 620.0, 360.0], BROWN),
    ];
    let r = ground(&boxes, "pick up the box that says FRAGILE");
    assert_eq!(found(&r), 2);
    assert!(r.reason.contains("FRAGILE"), "{}", r.reason);
    assert_eq!(r.action.as_deref(), Some("pick up"));
    // a misread letter is forgiven
    let misread = [
        with_text(
            thing("suitcase", [20.0, 200.0, 180.0, 360.0], BROWN),
            "FRAG1LE",
        ),
        with_text(
            thing("suitcase", [240.0, 200.0, 400.0, 360.0], BROWN),
            "THIS WAY UP",
        ),
    ];
    assert_eq!(found(&ground(&misread, "the box marked fragile")), 1);
    // nothing says it: not found, and the reason says text was looked for
    let r = ground(&boxes, "the box that says HEAVY");
    assert_eq!(r.status, Status::NotFound);
    assert!(r.reason.contains("heavy"), "{}", r.reason);
}

#[test]
fn the_bottle_labelled_bombay() {
    let bottles = [
        with_text(
            thing("bottle", [100.0, 100.0, 160.0, 300.0], BLUE),
            "BOMBAY SAPPHIRE",
        ),
        with_text(
            thing("bottle", [300.0, 100.0, 360.0, 300.0], BLUE),
            "GORDON'S",
        ),
        thing("cup", [450.0, 200.0, 520.0, 300.0], WHITE),
    ];
    assert_eq!(found(&ground(&bottles, "the bottle labelled Bombay")), 1);
    assert_eq!(found(&ground(&bottles, "hand me the Gordon's bottle")), 2);
    assert_eq!(
        found(&ground(
            &bottles,
            "the bottle with the word 'Gordon's' on it"
        )),
        2
    );
    // no text read on anything: the label alone cannot say which bottle is Bombay
    let unread = [
        thing("bottle", [100.0, 100.0, 160.0, 300.0], BLUE),
        thing("bottle", [300.0, 100.0, 360.0, 300.0], BLUE),
    ];
    assert_eq!(
        ground(&unread, "the bottle labelled Bombay").status,
        Status::NotFound
    );
}

#[test]
fn a_taxi_is_a_yellow_car_and_a_van_a_truck() {
    let street = [
        thing("car", [20.0, 200.0, 200.0, 300.0], WHITE),
        thing("car", [300.0, 200.0, 480.0, 300.0], YELLOW),
        thing("truck", [500.0, 150.0, 630.0, 300.0], WHITE),
    ];
    let r = ground(&street, "follow the taxi");
    assert_eq!(found(&r), 2);
    assert!(r.reason.contains("'taxi' → car"), "{}", r.reason);
    assert_eq!(found(&ground(&street, "the van")), 3);
    assert_eq!(found(&ground(&street, "the pickup truck")), 3);
    // no yellow car: no taxi, whatever else is there
    let r = ground(&street[..1], "the taxi");
    assert_eq!(r.status, Status::NotFound, "{r:?}");
    // a van the detector sees as both "car" and "truck" is the anchor, not the car meant
    let parked = [
        thing("car", [300.0, 200.0, 420.0, 300.0], WHITE),
        thing("truck", [302.0, 198.0, 422.0, 302.0], WHITE),
        thing("car", [440.0, 210.0, 560.0, 300.0], BLUE),
    ];
    assert_eq!(found(&ground(&parked, "the car parked next to the van")), 3);
    // the asker's own colour wins over the word's
    assert_eq!(found(&ground(&street[..2], "the white taxi")), 1);
}

#[test]
fn near_miss_labels_stand_in_below_exact_ones() {
    // a horse and something the detector calls a cow
    let field = [
        thing("horse", [20.0, 150.0, 250.0, 350.0], BROWN),
        thing("cow", [350.0, 150.0, 600.0, 350.0], WHITE),
    ];
    // the exact label wins when nothing else is asked
    assert_eq!(found(&ground(&field, "the horse")), 1);
    // but the cow-labelled one can be the horse meant
    assert_eq!(found(&ground(&field, "the horse on the right")), 2);
    assert_eq!(found(&ground(&field, "the white horse")), 2);
    assert_eq!(found(&ground(&field, "the pony on the right")), 2);
    // "the horses": both, for the asker to say which
    let r = ground(&field, "the horses");
    assert_eq!(r.status, Status::Ambiguous, "{r:?}");
    assert_eq!(r.candidates.len(), 2);
    // no near miss for a person
    assert_eq!(
        ground(&field, "the person").status,
        Status::NotFound,
        "a person is not a horse"
    );
}

#[test]
fn distance_and_order_superlatives() {
    // three people on one floor: the lower and bigger, the closer
    let people = [
        thing("person", [50.0, 100.0, 90.0, 200.0], BLUE),
        thing("person", [250.0, 150.0, 330.0, 400.0], BLUE),
        thing("person", [450.0, 120.0, 510.0, 280.0], BLUE),
    ];
    for s in [
        "the person closest to the camera",
        "the person nearest to me",
        "the kid in front",
        "the man in the foreground",
    ] {
        assert_eq!(found(&ground(&people, s)), 2, "{s}");
    }
    for s in [
        "the furthest person",
        "the person farthest from the camera",
        "the man at the back",
    ] {
        assert_eq!(found(&ground(&people, s)), 1, "{s}");
    }
    assert_eq!(
        found(&ground(&people, "the second person from the right")),
        2
    );
    assert_eq!(
        found(&ground(&people, "the person furthest to the right")),
        3
    );
    assert_eq!(found(&ground(&people, "the tallest person")), 2);
    // "closest to" a thing is still a relation to that thing
    let with_dog = [
        thing("person", [50.0, 100.0, 90.0, 200.0], BLUE),
        thing("person", [450.0, 150.0, 530.0, 400.0], BLUE),
        thing("dog", [100.0, 150.0, 160.0, 200.0], BROWN),
    ];
    assert_eq!(
        found(&ground(&with_dog, "the person closest to the dog")),
        1
    );
}

#[test]
fn clothes_colour_the_wearer() {
    let crowd = [
        thing("person", [50.0, 100.0, 110.0, 300.0], BLUE),
        thing("person", [250.0, 100.0, 310.0, 300.0], [200, 30, 30]),
        thing("person", [450.0, 100.0, 510.0, 300.0], YELLOW),
    ];
    assert_eq!(found(&ground(&crowd, "the man in the blue jacket")), 1);
    assert_eq!(found(&ground(&crowd, "the woman in red")), 2);
    assert_eq!(
        found(&ground(&crowd, "the kid wearing a yellow raincoat")),
        3
    );
    assert_eq!(
        ground(&crowd, "the person in the green coat").status,
        Status::NotFound
    );
}

#[test]
fn containers_and_materials() {
    let table = [
        thing("cup", [100.0, 200.0, 180.0, 300.0], WHITE),
        thing("cup", [300.0, 200.0, 380.0, 300.0], BROWN),
        thing("vase", [450.0, 100.0, 520.0, 300.0], BLUE),
    ];
    // "the mug": two cups — ambiguous, not a guess
    let r = ground(&table, "the mug");
    assert_eq!(r.status, Status::Ambiguous, "{r:?}");
    // a material's colour decides
    assert_eq!(found(&ground(&table, "the porcelain mug")), 1);
    assert_eq!(found(&ground(&table, "the wooden cup")), 2);
    // a jug is what a detector calls a vase (or a bottle)
    assert_eq!(found(&ground(&table, "the jug")), 3);
}

/// A bag around two books reads both covers: the words are the inner book's, not the bag's
/// (seen on a real photo, tests/ocr_ground.rs).
#[test]
fn the_text_belongs_to_the_smallest_box_that_says_it() {
    let things = [
        with_text(
            thing("suitcase", [80.0, 20.0, 560.0, 400.0], BLUE),
            "Let Us C BASIC ELECTRONICS",
        ),
        with_text(
            thing("book", [100.0, 120.0, 300.0, 380.0], WHITE),
            "Let Us C",
        ),
        with_text(
            thing("book", [320.0, 100.0, 540.0, 380.0], WHITE),
            "BASIC ELECTRONICS",
        ),
    ];
    assert_eq!(
        found(&ground(&things, "the one that says basic electronics")),
        3
    );
    assert_eq!(found(&ground(&things, "the one that says let us c")), 2);
}
