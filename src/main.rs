//! The `fleetwake` command: a thin layer over the library (see `src/cli`).

fn main() -> std::process::ExitCode {
    // `fleetwake ... | head`: when stdout is a closed pipe, end quietly like other
    // Unix tools instead of printing a panic. (SIGPIPE itself stays ignored, as
    // Rust sets it: a network program must see EPIPE on sockets, not die.)
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    fleetwake::cli::main()
}
