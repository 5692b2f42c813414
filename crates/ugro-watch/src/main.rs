fn main() -> std::process::ExitCode {
    ugro_support::cli::main("ugro-watch", ugro_watch::run)
}
