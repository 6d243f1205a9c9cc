//! The fulfilld under test: a process of its own (this very binary, `serve`), so its CPU,
//! memory and system calls are measured alone. Its `fsync`s are counted by `perf stat`
//! on the kernel's syscall tracepoints, which costs the process nothing (strace, which
//! stops the process at every counted call, would slow it down and skew the figures).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How long the server may take to start or to drain on SIGTERM.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running fulfilld; killed if dropped before [`Server::stop`].
pub struct Server {
    pub address: String,
    /// The process's id: fulfilld's own, not perf's.
    pid: u32,
    child: Child,
    binary: PathBuf,
    /// Where `perf stat` writes its count of `fsync`s when it watches the server.
    counts: Option<PathBuf>,
}

/// The process's resource use at a moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User plus system CPU time of every thread.
    pub cpu: Duration,
    pub rss_bytes: u64,
}

impl Server {
    /// Starts `fulfilld serve` with `env`, under `perf stat` when `count_fsyncs`, and waits
    /// until it is ready.
    pub async fn start(
        exe: &Path,
        env: &[(&str, String)],
        log: &Path,
        count_fsyncs: bool,
    ) -> anyhow::Result<Self> {
        Self::start_on(exe, env, log, count_fsyncs, free_port()).await
    }

    /// Like [`Server::start`], on `port` (a replica started again where it was).
    pub async fn start_on(
        exe: &Path,
        env: &[(&str, String)],
        log: &Path,
        count_fsyncs: bool,
        port: u16,
    ) -> anyhow::Result<Self> {
        let counts = count_fsyncs.then(|| log.with_extension("syncs"));
        let mut command = match &counts {
            Some(counts) => {
                let mut command = Command::new("perf");
                command
                    .args(["stat", "-x", ",", "-e", SYNC_CALLS, "-o"])
                    .arg(counts)
                    .arg("--")
                    .arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let log = std::fs::File::create(log).context("cannot create the server's log")?;
        let child = command
            .arg("serve")
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start fulfilld (or perf)")?;
        let mut server = Self {
            address: format!("http://127.0.0.1:{port}"),
            pid: child.id().context("fulfilld exited at once")?,
            child,
            binary: exe.to_owned(),
            counts,
        };
        server.wait_ready().await?;
        if server.counts.is_some() {
            server.pid = counted_child(server.pid, exe)?;
        }
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("fulfilld exited before it was ready ({status}); see its log");
            }
            if let Ok(response) = client.get(format!("{}/readyz", self.address)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("fulfilld did not become ready at {}", self.address)
    }

    /// The fulfilld process's id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// CPU time and resident memory so far.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        let cpu = process_cpu(self.pid).context("cannot read the server's /proc/PID/stat")?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("cannot read the server's /proc/PID/status")?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
        Ok(Usage {
            cpu,
            rss_bytes: rss_kib * 1024,
        })
    }

    /// SIGKILL, as a crash or the OOM killer ends it: nothing is drained.
    pub async fn kill_9(&mut self) -> anyhow::Result<()> {
        signal(self.pid, libc::SIGKILL);
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .context("fulfilld outlived SIGKILL")??;
        Ok(())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, as a deploy sends it; waits for the drain and returns the number of
    /// `fsync`-like calls counted, if they were.
    pub async fn stop(&mut self) -> anyhow::Result<Option<u64>> {
        signal(self.pid, libc::SIGTERM);
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .context("fulfilld did not stop within a minute of SIGTERM")??;
        match self.counts.take() {
            Some(counts) => Ok(Some(syncs_counted(&counts)?)),
            None => Ok(None),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Under perf, killing perf would leave fulfilld running: kill fulfilld itself.
        if self.counts.is_some() && matches!(self.child.try_wait(), Ok(None)) {
            // Before it was found (a start that failed), `pid` is perf's.
            if let Ok(traced) = counted_child(self.pid, &self.binary) {
                signal(traced, libc::SIGKILL);
            }
            signal(self.pid, libc::SIGKILL);
        }
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
    }
}

/// A free port for the server to bind, outside the kernel's ephemeral range (32768 and
/// up): none of the bench's own outgoing connections can hold it when the server binds.
fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_768);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The kernel's tracepoints for the calls that flush a file to disk.
const SYNC_CALLS: &str = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync";

/// Whether `perf stat` can count the syncing calls here.
pub fn can_count_syncs() -> bool {
    std::process::Command::new("perf")
        .args(["stat", "-x", ",", "-e", SYNC_CALLS, "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The fulfilld perf started, known by its binary's name.
fn counted_child(perf: u32, binary: &Path) -> anyhow::Result<u32> {
    // The kernel keeps the first 15 bytes of a process's name.
    let name: String = binary
        .file_name()
        .map(|name| name.to_string_lossy().chars().take(15).collect())
        .unwrap_or_default();
    let children = std::fs::read_to_string(format!("/proc/{perf}/task/{perf}/children"))
        .context("cannot list perf's children")?;
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .context("perf did not start fulfilld")
}

/// The counts `perf stat -x ,` wrote, summed: the count is each line's first field.
fn syncs_counted(counts: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(counts).context("cannot read perf's counts")?;
    Ok(text
        .lines()
        .filter(|line| line.contains("sys_enter_"))
        .filter_map(|line| line.split(',').next()?.trim().parse::<u64>().ok())
        .sum())
}

/// The live session actors the server's log reports as it began shutting down.
pub fn live_actors(log: &std::path::Path) -> Option<usize> {
    let log = std::fs::read_to_string(log).ok()?;
    let (_, after) = log.split_once("\"live_session_actors\":")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// User plus system CPU time of every thread of process `pid` so far.
pub fn process_cpu(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> u64 {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after the name.
    let cpu_ticks = ticks(11) + ticks(12);
    // SAFETY: sysconf has no preconditions.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    Ok(Duration::from_micros(cpu_ticks * 1_000_000 / per_second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_counts_are_summed_over_the_syncing_calls() {
        let dir = std::env::temp_dir().join(format!("fulfilld-perf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let counts = dir.join("counts");
        std::fs::write(
            &counts,
            "# started on Mon Nov 23 16:00:00 2026\n\n\
             120,,syscalls:sys_enter_fsync,859172,100.00,,\n\
             3,,syscalls:sys_enter_fdatasync,859172,100.00,,\n",
        )
        .unwrap();
        assert_eq!(syncs_counted(&counts).unwrap(), 123);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
