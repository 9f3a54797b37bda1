//! A supervised pool of worker processes (`python -m dspex.worker ...`) that attach to an
//! engine: crashed workers are restarted with exponential backoff, up to a number of crashes
//! each. `dspex optimize` and Python's `study.optimize(..., processes=N)` both run theirs
//! through it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the workers of a pool are started.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The program (a Python interpreter) and its arguments; each worker gets
    /// `--name <name_prefix>-<i>` appended.
    pub program: String,
    /// Arguments to the program (e.g. `-m dspex.worker` and where to attach).
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Prefix of the worker names: worker `i` is `<name_prefix>-<i>`.
    pub name_prefix: String,
    /// Discard the workers' standard output (the CLI's own output stays parseable); standard
    /// error is always inherited.
    pub quiet_stdout: bool,
}

/// Worker processes, restarted when they exit while the run goes on.
#[derive(Debug)]
pub struct WorkerPool {
    command: WorkerCommand,
    children: Vec<Option<Child>>,
    crashes: Vec<u32>,
    next_start: Vec<Option<Instant>>,
    /// Restarts so far.
    pub restarts: u64,
    max_restarts: u32,
}

impl WorkerPool {
    /// Starts `n` workers; each may crash `max_restarts` times before it is given up.
    pub fn start(command: WorkerCommand, n: usize, max_restarts: u32) -> WorkerPool {
        let mut pool = WorkerPool {
            command,
            children: (0..n).map(|_| None).collect(),
            crashes: vec![0; n],
            next_start: vec![None; n],
            restarts: 0,
            max_restarts,
        };
        for i in 0..n {
            pool.spawn(i);
        }
        pool
    }

    fn spawn(&mut self, i: usize) {
        let c = &self.command;
        let mut cmd = Command::new(&c.program);
        cmd.args(&c.args)
            .arg("--name")
            .arg(format!("{}-{i}", c.name_prefix))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .envs(c.env.iter().map(|(k, v)| (k, v)));
        if c.quiet_stdout {
            cmd.stdout(Stdio::null());
        }
        match cmd.spawn() {
            Ok(child) => self.children[i] = Some(child),
            Err(e) => {
                eprintln!("dspex: cannot start worker {i} ({}): {e}", c.program);
                self.crashes[i] += 1;
                self.next_start[i] = Some(Instant::now() + self.backoff(i));
            }
        }
    }

    /// 0.2 s after the first crash, doubling up to 5 s.
    fn backoff(&self, i: usize) -> Duration {
        let k = self.crashes[i].min(6);
        Duration::from_millis(100 * (1u64 << k)).min(Duration::from_secs(5))
    }

    /// Notes the workers that exited and restarts those whose backoff has passed (none once
    /// `run_over`); returns how many are alive.
    pub fn supervise(&mut self, run_over: bool) -> usize {
        let mut alive = 0;
        for i in 0..self.children.len() {
            if let Some(c) = &mut self.children[i] {
                match c.try_wait() {
                    Ok(None) => {
                        alive += 1;
                        continue;
                    }
                    Ok(Some(status)) => {
                        self.children[i] = None;
                        if run_over {
                            continue;
                        }
                        self.crashes[i] += 1;
                        if self.crashes[i] <= self.max_restarts {
                            eprintln!(
                                "dspex: worker {i} exited ({status}); restarting it in {:.1} s",
                                self.backoff(i).as_secs_f64()
                            );
                        } else {
                            eprintln!(
                                "dspex: worker {i} exited ({status}); it crashed {} times, not restarting it",
                                self.crashes[i]
                            );
                        }
                        self.next_start[i] = Some(Instant::now() + self.backoff(i));
                    }
                    Err(e) => {
                        eprintln!("dspex: worker {i}: {e}");
                        self.children[i] = None;
                    }
                }
            }
            if run_over || self.crashes[i] > self.max_restarts {
                continue;
            }
            if let Some(t) = self.next_start[i] {
                if Instant::now() >= t {
                    self.next_start[i] = None;
                    self.restarts += 1;
                    self.spawn(i);
                    if self.children[i].is_some() {
                        alive += 1;
                    }
                }
            }
        }
        alive
    }

    /// True when every worker is gone and crashed too often to be restarted.
    pub fn exhausted(&self) -> bool {
        (0..self.children.len())
            .all(|i| self.children[i].is_none() && self.crashes[i] > self.max_restarts)
    }

    /// Waits up to `grace` for the workers to exit (the run is over: they leave on their
    /// own), then kills those still running. Blocking.
    pub fn shutdown(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        for c in self.children.iter_mut().flatten() {
            loop {
                match c.try_wait() {
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(None) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => break,
                }
            }
        }
        self.children.iter_mut().for_each(|c| *c = None);
    }
}

impl Drop for WorkerPool {
    /// No worker outlives its pool.
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> WorkerCommand {
        WorkerCommand {
            program: "sh".into(),
            args: vec!["-c".into(), script.into(), "sh".into()],
            env: vec![("DSPEX_TEST_VAR".into(), "7".into())],
            name_prefix: "w".into(),
            quiet_stdout: true,
        }
    }

    fn until(mut f: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < end, "timed out");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn crashed_workers_are_restarted_until_they_crash_too_often() {
        // Each worker exits at once with an error: restarted twice (after backoff), then given up.
        let mut pool = WorkerPool::start(sh("exit 3"), 2, 2);
        until(|| {
            pool.supervise(false);
            pool.exhausted()
        });
        assert_eq!(pool.restarts, 4);
        assert_eq!(pool.supervise(false), 0);
    }

    #[test]
    fn workers_get_their_name_and_environment_and_shutdown_kills_stragglers() {
        let dir = std::env::temp_dir().join(format!("dspex-pool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            "echo \"$DSPEX_TEST_VAR $2\" > {}/\"$2\"; sleep 30",
            dir.display()
        );
        let mut pool = WorkerPool::start(sh(&script), 2, 0);
        until(|| dir.join("w-0").exists() && dir.join("w-1").exists());
        assert_eq!(pool.supervise(false), 2);
        let started = Instant::now();
        pool.shutdown(Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(pool.supervise(true), 0);
        let text = std::fs::read_to_string(dir.join("w-1")).unwrap();
        assert_eq!(text.trim(), "7 w-1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
