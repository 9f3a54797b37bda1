//! `dspex-testlm`: the local OpenAI-compatible server of dspex's tests and benchmarks (see the
//! library docs for what it answers). Prints `listening on http://ADDR/v1` once it accepts
//! connections and serves until it is killed.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use dspex_testlm::Behavior;

#[derive(Parser, Debug)]
#[command(
    name = "dspex-testlm",
    about = "A local OpenAI-compatible HTTP server for tests and benchmarks"
)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Latency of every accepted request, in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    latency_ms: f64,
    /// Answer 429 to a request arriving while this many are in flight.
    #[arg(long)]
    max_inflight: Option<usize>,
    /// Retry-After (seconds) sent with 429 and 503 answers.
    #[arg(long)]
    retry_after: Option<f64>,
    /// Probability of a random 429.
    #[arg(long, default_value_t = 0.0)]
    random_429: f64,
    /// Probability of a random 500.
    #[arg(long, default_value_t = 0.0)]
    random_500: f64,
    /// The API key requests must carry as a bearer token.
    #[arg(long)]
    api_key: Option<String>,
    /// The models the server knows (comma-separated; default: any).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Seed of the random failures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let behavior = Behavior {
        latency: Duration::from_secs_f64(args.latency_ms.max(0.0) / 1000.0),
        max_inflight: args.max_inflight,
        retry_after: args.retry_after,
        random_429: args.random_429,
        random_500: args.random_500,
        api_key: args.api_key,
        models: args.models,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let running = dspex_testlm::start(args.addr, behavior, args.seed).await?;
        println!("listening on {}", running.base_url());
        std::io::stdout().flush()?;
        let _ = tokio::signal::ctrl_c().await;
        Ok(())
    })
}
