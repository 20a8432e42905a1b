//! The `wsloop` binary: an echo server with the options of `wsloop --help`.

fn main() -> std::process::ExitCode {
    wsloop::cli::main()
}
