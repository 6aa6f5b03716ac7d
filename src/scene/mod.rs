//! What the tracks mean: lifecycle [`events`], [`rules`] raising alerts, and a plain-language
//! [`describe`]-ption of the scene. All three take the tracker's output for one frame and keep
//! whatever state they need between frames, so each can be driven and tested on its own.

pub mod describe;
pub mod events;
pub mod rules;

pub use describe::{
    Change, ChangeKind, DescribeConfig, Describer, Distance, Position, SceneDescription,
    SceneObject, VlmText,
};
pub use events::{Event, EventBuilder, EventConfig, EventType, ObjectState};
pub use rules::{
    load_rules, parse_rules, Alert, AlertDetails, AlertKind, Direction, NearThresholds, RuleConfig,
    RuleEngine, RuleKind, Severity, Verification, VerificationStatus, ZoneTrigger,
};
