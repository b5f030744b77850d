use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    swarm::cli::main(swarm::cli::args::Cli::parse())
}
