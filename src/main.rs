//! The `fleetwake` command: a thin layer over the library (see `src/cli`).

fn main() -> std::process::ExitCode {
    fleetwake::cli::main()
}
