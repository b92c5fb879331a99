use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use lxgate::contract::render;

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    what: Target,
    /// Output directory; without it the files go to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Absolute path of the lxgate binary the units run.
    #[arg(long)]
    bin: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    All,
    Tmpfiles,
    Systemd,
    Nginx,
    /// The resolved render inputs, as JSON.
    Inputs,
}

pub fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let inputs = render::Inputs::from_settings(&ctx.load()?, a.bin.as_deref());
    let what = a.what.to_possible_value().expect("no skipped variants");
    let files = render::select(&inputs, what.get_name())?;
    match a.out {
        Some(dir) => {
            for (rel, text) in &files {
                let p = dir.join(rel);
                std::fs::create_dir_all(p.parent().expect("relative file path"))?;
                std::fs::write(&p, text)?;
            }
            eprintln!("wrote {} file(s) under {}", files.len(), dir.display());
        }
        None => {
            for (rel, text) in &files {
                if files.len() > 1 {
                    println!("### {rel}");
                }
                print!("{text}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
