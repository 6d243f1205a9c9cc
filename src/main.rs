use std::process::ExitCode;

use clap::CommandFactory;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use fulfilld::cli::{self, Cli, Command, ParseError, Parsed};
use fulfilld::{commands, telemetry};

/// mimalloc rather than glibc's malloc: a fulfilment allocates on one thread and frees on
/// another (a webhook's worker, a session's arbiter, a connection's driver), and glibc's
/// allocator took a fifth of the server's samples in `bench e2e` (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let parsed = match cli::parse(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(ParseError::Clap {
            error,
            file,
            from_file,
        }) => {
            let in_file = |name: &str| {
                file.as_ref()
                    .filter(|_| from_file.iter().any(|given| given == name))
                    .map(|path| format!(" (in {})", path.display()))
                    .unwrap_or_default()
            };
            return refuse(&error, in_file);
        }
        Err(ParseError::Config(error)) => {
            eprintln!("fulfilld: {error}");
            return ExitCode::FAILURE;
        }
    };
    let Parsed { cli, settings } = parsed;
    // Traces of the server and of the commands that carry out work; none of probes,
    // settings or the bench, whose servers are processes of their own.
    let mut export = cli.settings.telemetry.clone();
    if !matches!(
        cli.command,
        None | Some(
            Command::Serve
                | Command::Fulfill { .. }
                | Command::Reconcile { .. }
                | Command::Events { .. }
                | Command::Sessions { .. }
                | Command::Effects { .. }
        )
    ) {
        export.otel_exporter_otlp_endpoint = None;
    }
    let telemetry = match telemetry::init(cli.settings.log_format, &export) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("fulfilld: configuration error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let run = commands::run(cli, settings);
    let ran = actix_web::rt::System::new().block_on(run);
    // What is buffered is sent before the process ends.
    drop(telemetry);
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fulfilld: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go out as clap prints them; a setting that does not parse is one
/// line naming its variable (and the settings file, when it came from there), as every
/// other configuration error is.
fn refuse(error: &clap::Error, in_file: impl Fn(&str) -> String) -> ExitCode {
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        let _ = error.print();
        return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
    }
    let rendered = error.to_string();
    let problem = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    match variable(error) {
        Some(name) => eprintln!(
            "fulfilld: configuration error: {name}{}: {problem}",
            in_file(&name)
        ),
        None => eprintln!("fulfilld: configuration error: {problem}"),
    }
    ExitCode::FAILURE
}

/// The environment variable of the argument an error is about.
fn variable(error: &clap::Error) -> Option<String> {
    let ContextValue::String(arg) = error.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let long = arg.split_whitespace().next()?.trim_start_matches("--");
    Cli::command()
        .get_arguments()
        .find(|candidate| candidate.get_long() == Some(long))?
        .get_env()
        .map(|name| name.to_string_lossy().into_owned())
}
