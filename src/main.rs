use std::process::ExitCode;

use clap::Parser;
use fulfilld::cli::Cli;
use fulfilld::{commands, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.settings.log_format() {
        Ok(format) => format,
        Err(error) => {
            eprintln!("fulfilld: {error}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(format);
    match actix_web::rt::System::new().block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fulfilld: {error:#}");
            ExitCode::FAILURE
        }
    }
}
