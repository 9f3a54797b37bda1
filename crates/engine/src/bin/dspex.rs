//! The `dspex` command line (see `dspex --help`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(dspex_engine::cli::main_from_env());
}
