fn main() -> std::process::ExitCode {
    ugro_support::cli::main("ugro-alert", ugro_alert::run)
}
