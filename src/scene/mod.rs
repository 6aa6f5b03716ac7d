//! What the tracks mean: lifecycle [`events`], [`rules`] raising alerts, and a plain-language
//! [`describe`]-ption of the scene. All three take the tracker's output for one frame and keep
//! whatever state they need between frames, so each can be driven and tested on its own. The
//! rules also say which zones each track is in ([`ZoneMembership`]); events and descriptions
//! take that alongside the tracks instead of it being written into them.

pub mod describe;
mod error;
pub mod events;
pub mod rules;
mod text;
mod zones;

pub use describe::{
    Change, ChangeKind, DescribeConfig, Describer, Distance, Position, SceneDescription,
    SceneObject, VlmText,
};
pub use error::SettingError;
pub use events::{Event, EventBuilder, EventConfig, EventType, ObjectState, ZoneStay};
pub use rules::{
    load_rules, parse_rules, Alert, AlertDetails, AlertKind, AlertType, Direction, Evaluation,
    NearThresholds, RuleConfig, RuleEngine, RuleError, RuleKind, Severity, Verification,
    VerificationStatus, ZoneTrigger,
};
pub use zones::ZoneMembership;
