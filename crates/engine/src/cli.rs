//! The `dspex` command line: `dspex serve` (the engine as a gRPC server), `dspex optimize
//! study.toml` (the engine plus a supervised pool of Python workers) and `dspex worker` (runs
//! `python -m dspex.worker`). The same entry point serves the `dspex` binary and the `dspex`
//! console script of the Python package (through `dspex._native.cli_main`).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use dspex_optimizer::TrialState;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::watch;

use crate::config::StudyFile;
use crate::grpc::{self, EngineService, ServeOptions};
use crate::scheduler::{RunOptions, RunSummary};
use crate::session::SessionLimits;
use crate::storage::Storage;
use crate::study::Study;
use crate::workers::{WorkerCommand, WorkerPool};

#[derive(Debug, Parser)]
#[command(
    name = "dspex",
    version,
    about = "dspex: an optimization engine. Python defines the experiment, a Rust engine runs it."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the engine as a gRPC server that Python processes attach to.
    Serve(ServeArgs),
    /// Run the study described by a study.toml with a supervised pool of Python workers.
    Optimize {
        /// The study file (see examples/study.toml).
        study: PathBuf,
        /// Text summary or one JSON object on stdout (for scripts).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Override n_trials of the file.
        #[arg(long)]
        n_trials: Option<u64>,
        /// Override [workers].processes of the file.
        #[arg(long)]
        processes: Option<usize>,
        /// Override [workers].launcher of the file: local processes or Ray actors.
        #[arg(long, value_enum)]
        launcher: Option<crate::config::LauncherKind>,
        /// The Python interpreter of the workers.
        #[arg(long, env = "DSPEX_PYTHON")]
        python: Option<String>,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Inspect or move the LM cache file of `dspex.native.LM(cache_path=...)`.
    Cache {
        #[command(subcommand)]
        action: CacheCmd,
    },
    /// Attach this machine to an engine as a worker (runs `python -m dspex.worker ARGS`).
    Worker {
        /// The Python interpreter.
        #[arg(long, env = "DSPEX_PYTHON")]
        python: Option<String>,
        /// Arguments of `python -m dspex.worker` (see its --help).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run an unmodified Optuna script on dspex: `dspex run SCRIPT [ARGS]`.
    Run(PythonArgs),
    /// List, show, delete or export the studies of a storage (`dspex studies --storage URL`
    /// alone lists them as Optuna's `optuna studies` does).
    Studies(PythonArgs),
    /// Optuna's `create-study`: create a study and print its name.
    CreateStudy(PythonArgs),
    /// Optuna's `delete-study`.
    DeleteStudy(PythonArgs),
    /// Optuna's `study set-user-attr`.
    Study(PythonArgs),
    /// Optuna's `trials`: the trials of a study (`-f table|json|yaml`).
    Trials(PythonArgs),
    /// Optuna's `best-trial`.
    BestTrial(PythonArgs),
    /// Optuna's `best-trials` (the Pareto front of a multi-objective study).
    BestTrials(PythonArgs),
    /// Optuna's `ask`: start a trial of a search space given as JSON, print its parameters.
    Ask(PythonArgs),
    /// Optuna's `tell`: finish a trial with its values or state.
    Tell(PythonArgs),
    /// Optuna's `storage upgrade`.
    Storage(PythonArgs),
    /// List, show or close the sessions of a served engine.
    Sessions(PythonArgs),
    /// Benchmark dspex against its peers: `dspex bench --suite quick|full --out DIR`.
    Bench(PythonArgs),
}

/// The arguments of a command that the Python package runs (`python/dspex/cli.py` takes it
/// before this parser; it is here to be listed by `--help`).
#[derive(Debug, clap::Args)]
struct PythonArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// `dspex cache ...`: the LM cache file (a SQLite file; other processes may use it meanwhile).
#[derive(Debug, Subcommand)]
enum CacheCmd {
    /// Entries and bytes per model, as JSON.
    Stats {
        /// The cache file.
        path: PathBuf,
    },
    /// Every entry as JSON lines on stdout (or into --out).
    Export {
        /// The cache file.
        path: PathBuf,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Add the entries of an export (existing keys are replaced).
    Import {
        /// The cache file (created when missing).
        path: PathBuf,
        /// The JSON-lines file written by `dspex cache export`.
        input: PathBuf,
    },
    /// Delete every entry (of one model with --model).
    Clear {
        /// The cache file.
        path: PathBuf,
        /// Only this model's entries.
        #[arg(long)]
        model: Option<String>,
    },
}

/// Runs a `dspex cache` command.
async fn cache_cmd(action: CacheCmd) -> Result<i32, String> {
    use dspex_native::lm::cache;
    let exists = |p: &std::path::Path| {
        if p.exists() {
            Ok(())
        } else {
            Err(format!("no cache file at {}", p.display()))
        }
    };
    match action {
        CacheCmd::Stats { path } => {
            exists(&path)?;
            let v = cache::disk_stats(&path).await.map_err(|e| e.to_string())?;
            println!("{v:#}");
        }
        CacheCmd::Export { path, out } => {
            exists(&path)?;
            let n = match &out {
                Some(o) => {
                    let mut f = std::io::BufWriter::new(
                        std::fs::File::create(o).map_err(|e| format!("{}: {e}", o.display()))?,
                    );
                    let n = cache::disk_export(&path, &mut f)
                        .await
                        .map_err(|e| e.to_string())?;
                    std::io::Write::flush(&mut f).map_err(|e| format!("{}: {e}", o.display()))?;
                    n
                }
                None => cache::disk_export(&path, &mut std::io::stdout().lock())
                    .await
                    .map_err(|e| e.to_string())?,
            };
            eprintln!("exported {n} entries");
        }
        CacheCmd::Import { path, input } => {
            let text =
                std::fs::read_to_string(&input).map_err(|e| format!("{}: {e}", input.display()))?;
            let n = cache::disk_import(&path, &text)
                .await
                .map_err(|e| format!("{}: {e}", input.display()))?;
            println!("imported {n} entries into {}", path.display());
        }
        CacheCmd::Clear { path, model } => {
            exists(&path)?;
            let n = cache::disk_clear(&path, model.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            println!("deleted {n} entries from {}", path.display());
        }
    }
    Ok(0)
}

/// The options of `dspex serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on. Anything but loopback requires a token, and TLS unless --insecure.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Every call must carry this token (`authorization: Bearer <token>`). Visible to every
    /// user of the machine in `ps`: prefer --token-file or the DSPEX_TOKEN variable.
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the token from this file (its first line; keep the file readable by you only).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM certificate of a CA: only clients with a certificate it signed get in (mutual TLS;
    /// clients set DSPEX_TLS_CLIENT_CERT and DSPEX_TLS_CLIENT_KEY).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Allow a non-loopback address without TLS: the token and every trial cross the network
    /// in plain text (a trusted network, or a TLS-terminating proxy in front).
    #[arg(long)]
    insecure: bool,
    /// Serve gRPC reflection on a non-loopback address too (always on for loopback).
    #[arg(long)]
    reflection: bool,
    /// Largest message accepted or sent, in bytes.
    #[arg(long, default_value_t = grpc::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Most sessions open at once; opening one more is refused until some close or expire.
    #[arg(long, default_value_t = SessionLimits::default().max_sessions)]
    max_sessions: usize,
    /// Most Attach and Session streams open at once; more are refused (RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = grpc::DEFAULT_MAX_STREAMS)]
    max_streams: usize,
    /// Most concurrent calls on one client connection (HTTP/2 streams; more are refused).
    #[arg(long, default_value_t = grpc::DEFAULT_MAX_STREAMS_PER_CONNECTION)]
    max_streams_per_connection: u32,
    /// Seconds a client connection may stay open with no call in flight before the engine
    /// closes it (its client reconnects for its next call); 0: never.
    #[arg(long, default_value_t = grpc::DEFAULT_IDLE_TIMEOUT.as_secs_f64())]
    idle_timeout: f64,
    /// Heartbeat period of the engine on Attach streams, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Where studies live: `memory`, `sqlite:///path.db` or `postgresql://...`.
    #[arg(long, default_value = "memory")]
    storage: String,
}

/// What the host of the CLI provides.
#[derive(Debug, Clone)]
pub struct CliEnv {
    /// The Python interpreter to use when none is given (the console script's `sys.executable`).
    pub python: Option<String>,
    /// Becomes true when the user asks to stop (Ctrl-C, SIGTERM).
    pub cancel: watch::Receiver<bool>,
}

/// Runs the CLI with `args` (`args[0]` is the program name); returns the exit code.
pub fn run(args: Vec<String>, env: CliEnv) -> i32 {
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let Some(cmd) = cli.command else {
        use clap::CommandFactory;
        let _ = Cli::command().print_help();
        println!();
        return 0;
    };
    init_logging();
    let handle = match crate::runtime::handle() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("dspex: {e}");
            return 1;
        }
    };
    let r = match cmd {
        Cmd::Serve(args) => match crate::storage::open_url(&args.storage) {
            Ok(storage) => handle.block_on(serve(args, storage, env.cancel)),
            Err(e) => Err(format!("--storage {:?}: {e}", args.storage)),
        },
        Cmd::Optimize {
            study,
            output,
            n_trials,
            processes,
            launcher,
            python,
            no_progress,
        } => handle.block_on(optimize(
            study,
            output,
            Overrides {
                n_trials,
                processes,
                launcher,
            },
            python.or(env.python),
            no_progress,
            env.cancel,
        )),
        Cmd::Cache { action } => handle.block_on(cache_cmd(action)),
        Cmd::Run(_)
        | Cmd::Studies(_)
        | Cmd::Sessions(_)
        | Cmd::Bench(_)
        | Cmd::CreateStudy(_)
        | Cmd::DeleteStudy(_)
        | Cmd::Study(_)
        | Cmd::Trials(_)
        | Cmd::BestTrial(_)
        | Cmd::BestTrials(_)
        | Cmd::Ask(_)
        | Cmd::Tell(_)
        | Cmd::Storage(_) => Err(
            "this command is run by the Python package: use the `dspex` command installed with it \
             (or python -m dspex.cli)"
                .into(),
        ),
        Cmd::Worker { python, args } => {
            let py = python.or(env.python).unwrap_or_else(|| "python3".into());
            match std::process::Command::new(&py)
                .args(["-m", "dspex.worker"])
                .args(args)
                .status()
            {
                Ok(s) => Ok(s.code().unwrap_or(1)),
                Err(e) => Err(format!("cannot run {py}: {e}")),
            }
        }
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dspex: error: {e}");
            1
        }
    }
}

async fn cancelled(mut cancel: watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn serve(
    args: ServeArgs,
    storage: Arc<dyn Storage>,
    cancel: watch::Receiver<bool>,
) -> Result<i32, String> {
    let ServeArgs {
        addr,
        token,
        token_file,
        tls_cert,
        tls_key,
        tls_client_ca,
        insecure,
        reflection,
        max_message_bytes,
        max_sessions,
        max_streams,
        max_streams_per_connection,
        idle_timeout,
        heartbeat_ms,
        ..
    } = args;
    let idle_timeout = match Duration::try_from_secs_f64(idle_timeout) {
        Ok(d) if d.is_zero() => None,
        Ok(d) => Some(d),
        Err(_) => {
            return Err(format!(
                "--idle-timeout: expected seconds >= 0 (0: never), got {idle_timeout}"
            ))
        }
    };
    let token = serve_token(token, token_file.as_deref())?;
    grpc::check_bind(&addr, token.as_deref(), tls_cert.is_some(), insecure)
        .map_err(|e| e.to_string())?;
    let read = |p: PathBuf| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()));
    let tls = match tls_cert.zip(tls_key) {
        Some((c, k)) => Some((read(c)?, read(k)?)),
        None => None,
    };
    let client_ca = tls_client_ca.map(read).transpose()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let service =
        EngineService::with_heartbeat(storage, Duration::from_millis(heartbeat_ms.max(10)));
    service.set_session_limits(SessionLimits {
        max_sessions,
        ..SessionLimits::default()
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("dspex engine listening on {local} ({scheme})");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let svc = service.clone();
    let shutdown = async move {
        cancelled(cancel).await;
        eprintln!("dspex: shutting down");
        svc.shutdown();
    };
    grpc::serve(
        listener,
        service,
        ServeOptions {
            token,
            tls,
            client_ca,
            reflection: reflection || addr.ip().is_loopback(),
            max_message_bytes,
            max_streams,
            max_streams_per_connection,
            idle_timeout,
        },
        shutdown,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(0)
}

/// Prints the engine's log events on stderr from level `DSPEX_LOG` (error, warn, info, debug,
/// trace; default warn) up. Does nothing when a subscriber is installed already.
fn init_logging() {
    let level = std::env::var("DSPEX_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::WARN);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The token of `dspex serve`: `--token` (with a warning: it shows in `ps`), the first line of
/// `--token-file`, or the DSPEX_TOKEN variable; None when there is none (or it is empty).
fn serve_token(flag: Option<String>, file: Option<&Path>) -> Result<Option<String>, String> {
    if flag.is_some() {
        tracing::warn!(
            "a token given with --token is visible to every user of this machine (ps); prefer --token-file or DSPEX_TOKEN"
        );
    }
    let token = match (flag, file) {
        (Some(t), _) => Some(t),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
            let line = text.lines().next().unwrap_or("").trim();
            if line.is_empty() {
                return Err(format!(
                    "--token-file {}: the file is empty",
                    path.display()
                ));
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(m) = std::fs::metadata(path) {
                    if m.permissions().mode() & 0o077 != 0 {
                        tracing::warn!(
                            "--token-file {} can be read by other users (chmod 600 it)",
                            path.display()
                        );
                    }
                }
            }
            Some(line.to_string())
        }
        (None, None) => std::env::var("DSPEX_TOKEN").ok(),
    };
    match token.filter(|t| !t.is_empty()) {
        Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
            Err("the token must be printable ASCII without spaces".into())
        }
        t => Ok(t),
    }
}

/// A token nobody can guess, for the engine's own workers.
pub fn random_token() -> String {
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// PYTHONPATH for the workers: the current directory and the study file's directory first.
fn python_path(study: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        parts.push(cwd.display().to_string());
    }
    if let Some(dir) = study.parent().and_then(|d| d.canonicalize().ok()) {
        parts.push(dir.display().to_string());
    }
    if let Ok(old) = std::env::var("PYTHONPATH") {
        if !old.is_empty() {
            parts.push(old);
        }
    }
    parts.join(":")
}

/// Imports the objective in a throw-away Python process: a clear error before any trial runs.
async fn check_objective(python: &str, objective: &str, pythonpath: &str) -> Result<(), String> {
    let out = Command::new(python)
        .args(["-m", "dspex.worker", "--check", "--objective", objective])
        .env("PYTHONPATH", pythonpath)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run the Python interpreter {python:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)");
    Err(format!("cannot load the objective {objective:?}: {last}"))
}

fn count_done(study: &Study) -> (u64, u64, u64, u64) {
    let Ok(trials) = study.trials(None) else {
        return (0, 0, 0, 0);
    };
    let mut c = (0, 0, 0, 0);
    for t in trials {
        match t.state {
            TrialState::Complete => c.0 += 1,
            TrialState::Pruned => c.1 += 1,
            TrialState::Fail => c.2 += 1,
            TrialState::Running => c.3 += 1,
            TrialState::Waiting => {}
        }
    }
    c
}

/// What `dspex optimize`'s options override in the study file.
struct Overrides {
    n_trials: Option<u64>,
    processes: Option<usize>,
    launcher: Option<crate::config::LauncherKind>,
}

async fn optimize(
    path: PathBuf,
    output: Output,
    overrides: Overrides,
    python: Option<String>,
    no_progress: bool,
    cancel: watch::Receiver<bool>,
) -> Result<i32, String> {
    let started = Instant::now();
    let Overrides {
        n_trials,
        processes,
        launcher,
    } = overrides;
    let file = StudyFile::load(&path).map_err(|e| e.to_string())?;
    let python = python
        .or_else(|| file.workers.python.clone())
        .unwrap_or_else(|| "python3".into());
    let pythonpath = python_path(&path);
    check_objective(&python, &file.objective, &pythonpath).await?;
    let storage: Arc<dyn Storage> = {
        let url = file.storage.clone().unwrap_or_default();
        tokio::task::spawn_blocking(move || crate::storage::open_url(&url))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| {
                let loc = file.storage_line.map_or(String::new(), |l| format!(":{l}"));
                format!("{}{loc}: storage: {e}", path.display())
            })?
    };
    let sampler = file
        .sampler
        .as_ref()
        .map(|s| s.build())
        .transpose()
        .map_err(|e| e.to_string())?;
    let pruner = file
        .pruner
        .as_ref()
        .map(|p| p.build())
        .transpose()
        .map_err(|e| e.to_string())?;
    let study = {
        let (st, name, dirs) = (storage.clone(), file.name.clone(), file.directions.clone());
        tokio::task::spawn_blocking(move || {
            Study::create(st, name.as_deref(), dirs, sampler, pruner, true)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
    };
    let server = grpc::LoopbackServer::start(study.clone())
        .await
        .map_err(|e| e.to_string())?;
    let addr = server.address();
    let token = server.token().to_string();
    let secs = |v: Option<f64>| v.and_then(|t| Duration::try_from_secs_f64(t).ok());
    let opts = RunOptions {
        n_trials: n_trials.or(file.n_trials),
        timeout: secs(file.timeout),
        // The workers add their capacities as they attach.
        concurrency: 0,
        max_concurrency: file.max_concurrency,
        trial_timeout: secs(file.trial_timeout),
        evaluators_ask: false,
    };
    let total = opts.n_trials;
    let before = count_done(&study);
    let run = server
        .start_run(
            opts,
            file.workers.max_retries,
            Arc::new(file.search_space.clone()),
        )
        .map_err(|e| e.to_string())?;
    let n_workers = processes.unwrap_or(file.workers.processes).max(1);
    let w = &file.workers;
    let common = [
        "--engine".to_string(),
        addr.to_string(),
        "--study".into(),
        study.name().to_string(),
        "--objective".into(),
        file.objective.clone(),
        "--concurrency".into(),
        w.concurrency.to_string(),
    ];
    // local: the worker processes; ray: one supervised launcher process whose actors work
    let (args, processes, prefix) = match launcher.unwrap_or(w.launcher) {
        crate::config::LauncherKind::Local => {
            let mut a = vec!["-m".to_string(), "dspex.worker".into()];
            a.extend(common);
            a.extend(["--heartbeat-ms".into(), w.heartbeat_ms.to_string()]);
            (a, n_workers, "pool")
        }
        crate::config::LauncherKind::Ray => {
            let mut a = vec!["-m".to_string(), "dspex.launchers".into(), "ray".into()];
            a.extend(common);
            a.extend([
                "--num-workers".into(),
                n_workers.to_string(),
                "--address".into(),
                w.address.clone(),
                "--num-cpus".into(),
                w.num_cpus_per_worker.to_string(),
                "--num-gpus".into(),
                w.num_gpus_per_worker.to_string(),
                "--resources".into(),
                serde_json::to_string(&w.resources).unwrap_or_else(|_| "{}".into()),
            ]);
            (a, 1, "ray-launcher")
        }
    };
    let mut pool = WorkerPool::start(
        WorkerCommand {
            program: python.clone(),
            args,
            env: vec![
                ("DSPEX_TOKEN".into(), token),
                ("PYTHONPATH".into(), pythonpath),
            ],
            name_prefix: prefix.into(),
            quiet_stdout: true,
        },
        processes,
        w.max_restarts,
    );
    let bar = if no_progress || output == Output::Json {
        indicatif::ProgressBar::hidden()
    } else {
        let b = match total {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::no_length(),
        };
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} trials  {msg}  [{elapsed_precise}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    };
    let single = study.directions().len() == 1;
    let mut interrupted = false;
    let summary: RunSummary = loop {
        if let Some(s) = run.wait(Duration::ZERO) {
            break s;
        }
        if *cancel.borrow() && !interrupted {
            interrupted = true;
            run.interrupt("interrupted by the user");
        }
        let alive = pool.supervise(false);
        if alive == 0 && pool.exhausted() && !run.is_finished() {
            run.interrupt("every worker crashed too often; see the errors above");
        }
        let st = study.clone();
        let (done, best) = tokio::task::spawn_blocking(move || {
            let c = count_done(&st);
            let best = if single {
                st.best_trial().ok().and_then(|t| t.value())
            } else {
                None
            };
            (c, best)
        })
        .await
        .unwrap_or(((0, 0, 0, 0), None));
        let n = (done.0 + done.1 + done.2).saturating_sub(before.0 + before.1 + before.2);
        bar.set_position(n);
        let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "best {}  {:.1} trials/s  workers {alive}/{n_workers}",
            best.map_or("-".into(), |b| format!("{b:.6}")),
            rate
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish_and_clear();
    let pool = tokio::task::spawn_blocking(move || {
        pool.shutdown(Duration::from_secs(5));
        pool
    })
    .await
    .map_err(|e| e.to_string())?;
    server.shutdown(Duration::from_secs(5)).await;
    let st = study.clone();
    let report = tokio::task::spawn_blocking(move || summary_json(&st, &summary))
        .await
        .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut report = report;
    if let Some(o) = report.as_object_mut() {
        o.insert("elapsed_seconds".into(), elapsed.into());
        o.insert("worker_restarts".into(), pool.restarts.into());
    }
    match output {
        Output::Json => println!("{report}"),
        Output::Text => print_summary(&report),
    }
    let code = match report.get("reason").and_then(|r| r.as_str()) {
        Some("interrupted") => 130,
        Some("aborted") | Some("error") => 1,
        _ => 0,
    };
    Ok(code)
}

fn summary_json(study: &Study, s: &RunSummary) -> serde_json::Value {
    let (complete, pruned, fail, running) = count_done(study);
    let (reason, detail) = (s.reason.name(), s.reason.detail());
    let mut out = serde_json::json!({
        "study": study.name(),
        "reason": reason,
        "detail": detail,
        "trials": complete + pruned + fail + running,
        "complete": complete,
        "pruned": pruned,
        "fail": fail,
        "running": running,
    });
    let retried: Vec<u64> = study
        .trials(None)
        .unwrap_or_default()
        .iter()
        .filter(|t| t.system_attrs.contains_key("failed_trial"))
        .map(|t| t.number)
        .collect();
    // Each lost trial and the trial that re-ran it.
    let lost: Vec<serde_json::Value> = study
        .trials(None)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| {
            let h = t.system_attrs.get("retry_history")?.as_array()?;
            let failed = h.last()?.as_u64()?;
            Some(serde_json::json!({"trial": failed, "retry": t.number, "state": t.state.as_str()}))
        })
        .collect();
    if let Some(o) = out.as_object_mut() {
        o.insert("retries".into(), retried.into());
        o.insert("lost".into(), lost.into());
        if study.directions().len() == 1 {
            if let Ok(b) = study.best_trial() {
                let params: BTreeMap<String, serde_json::Value> = b
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect();
                o.insert("best_trial".into(), b.number.into());
                o.insert(
                    "best_value".into(),
                    b.value().map_or(serde_json::Value::Null, Into::into),
                );
                o.insert("best_params".into(), serde_json::json!(params));
            }
        } else if let Ok(front) = study.best_trials() {
            let f: Vec<serde_json::Value> = front
                .iter()
                .map(|t| serde_json::json!({"number": t.number, "values": t.values}))
                .collect();
            o.insert("best_trials".into(), f.into());
        }
    }
    out
}

fn print_summary(r: &serde_json::Value) {
    let g = |k: &str| r.get(k).cloned().unwrap_or(serde_json::Value::Null);
    println!(
        "study {}: {} trials ({} complete, {} pruned, {} failed) in {:.1} s; stopped by {}",
        g("study").as_str().unwrap_or("?"),
        g("trials"),
        g("complete"),
        g("pruned"),
        g("fail"),
        g("elapsed_seconds").as_f64().unwrap_or(0.0),
        g("reason").as_str().unwrap_or("?"),
    );
    if let Some(d) = g("detail").as_str() {
        println!("  detail: {d}");
    }
    let retries = g("retries");
    if retries.as_array().is_some_and(|a| !a.is_empty()) {
        println!("  retried trials: {retries}");
    }
    if !g("best_value").is_null() {
        println!(
            "best value: {} (trial {})\nbest params: {}",
            g("best_value"),
            g("best_trial"),
            g("best_params")
        );
    }
}

/// The `dspex` binary: the CLI with Ctrl-C / SIGTERM handling.
pub fn main_from_env() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    let (tx, rx) = watch::channel(false);
    if let Ok(h) = crate::runtime::handle() {
        h.spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = match signal(SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            let _ = tx.send(true);
        });
    }
    run(
        args,
        CliEnv {
            python: None,
            cancel: rx,
        },
    )
}
