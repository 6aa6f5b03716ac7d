//! The `lookout` command line: parses the arguments, sets up logging and hands each subcommand to
//! its file under `cli/`, which turns its arguments into library settings and runs them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "lookout",
    version,
    about = "Edge inference: camera → detections → events → MQTT"
)]
struct Cli {
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Detect objects in image files or folders.
    Detect(cli::detect::DetectArgs),
    /// The main job: camera → detect → track → rules → events, alerts and scene descriptions.
    /// With no arguments: the bundled model on the bundled clip with a demo zone.
    Run(cli::run::RunArgs),
    /// Print events, alerts and scene descriptions from MQTT as they arrive.
    Watch(cli::watch::WatchArgs),
    /// Time a model on an image: start-up, pre-processing, inference, post-processing.
    Bench(cli::bench::BenchArgs),
    /// Which object an instruction means: `lookout ground IMAGE "pick up the red cup on the left"`.
    Ground(cli::ground::GroundArgs),
    /// Check a config as a run would read it (board, [mqtt], models, zones, source) and print it resolved.
    Check(cli::check::CheckArgs),
    /// Describe an image with a vision-language model.
    Describe(cli::describe::DescribeArgs),
    /// Ask a vision-language model a question about an image.
    Ask(cli::describe::AskArgs),
    /// List the installed models, or pull one (`lookout models pull smolvlm-256m`).
    Models(cli::models::ModelsArgs),
    /// List what the event store holds: objects and alerts by time, camera, label, zone.
    Events(cli::events::EventsArgs),
    /// Search the event store in words: `lookout search "red car at the gate last night"`.
    Search(cli::search::SearchArgs),
    /// A short narrative of a time window from the event store, with timestamps.
    Summary(cli::summary::SummaryArgs),
    /// Read the text in image files or folders (OCR): lines with polygons and scores, in reading order.
    Read(cli::read::ReadArgs),
}

fn main() -> ExitCode {
    // Before any thread starts: freed tensors stay in the heap for the next op (engine/heap.rs).
    lookout::engine::keep_freed_memory();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let res = match cli.cmd {
        Cmd::Detect(a) => cli::detect::run(a),
        Cmd::Run(a) => cli::run::run(a),
        Cmd::Watch(a) => cli::watch::run(a),
        Cmd::Bench(a) => cli::bench::run(a),
        Cmd::Ground(a) => cli::ground::run(a),
        Cmd::Check(a) => cli::check::run(a),
        Cmd::Describe(a) => cli::describe::describe(a),
        Cmd::Ask(a) => cli::describe::ask(a),
        Cmd::Models(a) => cli::models::run(a),
        Cmd::Events(a) => cli::events::run(a),
        Cmd::Search(a) => cli::search::run(a),
        Cmd::Summary(a) => cli::summary::run(a),
        Cmd::Read(a) => cli::read::run(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // rumqttd logs every client disconnect as an error; keep it quiet unless debugging.
    let filter = if verbose >= 2 {
        level.to_string()
    } else {
        format!("{level},rumqttd=off")
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter)).init();
}
