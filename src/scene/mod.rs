//! What the tracks mean: lifecycle [`events`] and a plain-language [`describe`]-ption of the
//! scene. Each takes the tracker's output for one frame and keeps whatever state it needs between
//! frames, so each can be driven and tested on its own.

pub mod describe;
pub mod events;

pub use describe::{
    Change, ChangeKind, DescribeConfig, Describer, Distance, Position, SceneDescription,
    SceneObject,
};
pub use events::{Event, EventBuilder, EventConfig, EventType, ObjectState};
