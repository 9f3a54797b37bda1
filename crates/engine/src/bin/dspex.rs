//! The `dspex` command line (see `dspex --help`).

fn main() {
    std::process::exit(dspex_engine::cli::main_from_env());
}
