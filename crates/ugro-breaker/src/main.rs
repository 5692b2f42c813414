fn main() -> std::process::ExitCode {
    ugro_support::cli::main("ugro-breaker", ugro_breaker::run)
}
