fn main() -> std::process::ExitCode {
    ugro_types::cli::main("ugro-probe", ugro_probe::run)
}
