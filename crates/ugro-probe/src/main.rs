fn main() -> std::process::ExitCode {
    ugro_support::cli::main("ugro-probe", ugro_probe::run)
}
