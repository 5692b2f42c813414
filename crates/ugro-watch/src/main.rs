fn main() -> std::process::ExitCode {
    ugro_types::cli::main("ugro-watch", ugro_watch::run)
}
