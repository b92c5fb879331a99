use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {}

/// The same bytes `lxgate serve` answers at /api/openapi.json, for integrators and
/// code generators without a running server.
pub fn run(_: Args) -> anyhow::Result<ExitCode> {
    print!("{}", lxgate::boundary::http::openapi::json());
    Ok(ExitCode::SUCCESS)
}
