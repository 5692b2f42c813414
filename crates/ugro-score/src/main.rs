fn main() -> std::process::ExitCode {
    ugro_support::cli::main("ugro-score", ugro_score::run)
}
