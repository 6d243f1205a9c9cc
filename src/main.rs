use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};
use fulfilld::cli::Cli;
use fulfilld::{commands, telemetry};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return refuse(&error),
    };
    let format = cli.settings.log_format;
    telemetry::init(format);
    match actix_web::rt::System::new().block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fulfilld: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go out as clap prints them; a setting that does not parse is one
/// line naming its variable, as every other configuration error is.
fn refuse(error: &clap::Error) -> ExitCode {
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
        Some(name) => eprintln!("fulfilld: configuration error: {name}: {problem}"),
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
