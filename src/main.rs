//! Parse the command line, set up logging and the runtime, dispatch (`src/cli/`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    lxgate::logging::init(args.default_log_filter());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(args.run()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lxgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
