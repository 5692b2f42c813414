fn main() -> std::process::ExitCode {
    ugro_types::cli::main("ugro-breaker", ugro_breaker::run)
}
