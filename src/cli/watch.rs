//! `lookout watch`: print events, alerts and scene descriptions from MQTT as they arrive.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lookout::mqtt::{self, WatchOptions};

#[derive(clap::Args)]
pub struct WatchArgs {
    /// Broker URL.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// Only this device (default: every device).
    #[arg(long)]
    device: Option<String>,
    /// One JSON object per message.
    #[arg(long)]
    json: bool,
    /// Also show online/offline status.
    #[arg(long)]
    status: bool,
    /// CA file for mqtts://.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// Stop after this many messages.
    #[arg(long)]
    max_messages: Option<usize>,
    /// Stop when nothing arrived for this many seconds.
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// The devices' `[mqtt] topic_prefix`.
    #[arg(long, default_value = lookout::mqtt::topics::DEFAULT_ROOT)]
    topic_prefix: String,
}

pub fn run(a: WatchArgs) -> anyhow::Result<ExitCode> {
    let opts = WatchOptions {
        broker: a.broker,
        device: a.device,
        json: a.json,
        status: a.status,
        ca_file: a.ca_file,
        username: a.username,
        password: a.password,
        max_messages: a.max_messages,
        idle_timeout: a.idle_timeout.map(Duration::from_secs_f64),
        topic_prefix: a.topic_prefix,
    };
    let n = mqtt::watch(&opts, &mut std::io::stdout().lock())?;
    eprintln!("{n} messages");
    Ok(ExitCode::SUCCESS)
}
