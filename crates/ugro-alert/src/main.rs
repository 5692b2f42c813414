fn main() -> std::process::ExitCode {
    ugro_types::cli::main("ugro-alert", ugro_alert::run)
}
