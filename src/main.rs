//! The `fleetwake` command: a thin layer over the library (see `src/cli`).

fn main() -> std::process::ExitCode {
    // Like other Unix tools, end quietly when stdout is a closed pipe
    // (`fleetwake ... | head`) instead of panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    fleetwake::cli::main()
}
