fn main() -> std::process::ExitCode {
    ugro_types::cli::main("ugro-score", ugro_score::run)
}
