fn main() -> std::process::ExitCode {
    ugro_score::main()
}
