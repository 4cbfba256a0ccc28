//! A REAL llama.cpp HTTP server for the integration tests, on 127.0.0.1.
//!
//! The server is llama.cpp's own `tools/server`, embedded in the `xllamacpp` wheel and started by
//! `tools/remote/llama_server.py` from the venv that `bash tools/remote/setup.sh` builds
//! (`$TOXDRIFT_REMOTE_VENV`, default `target/remote-venv`), on the real Gemma-3-270M Q4_K_M GGUF.
//! Missing venv or GGUF: [`LlamaServer::start`] fails with a message naming the setup script;
//! it never skips.
//!
//! Standard library only, so any test crate can include it:
//! `#[path = "common/llama_server.rs"] mod llama_server;` (from the workspace root's tests:
//! `#[path = "../crates/remote-gen/tests/common/llama_server.rs"]`).
//!
//! ```ignore
//! let mut server = LlamaServer::start(1, 1)?; // 1 slot, 1 thread
//! let url = server.base_url(); // http://127.0.0.1:PORT/v1
//! server.kill(); // SIGKILL, mid-run
//! server.restart()?; // same port
//! // Drop kills it: no orphan servers, ever (and the script exits if this process dies).
//! ```
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The served model name (`--alias`), as `/v1/models` lists it.
pub const MODEL_NAME: &str = "gemma-3-270m";
/// The GGUF file name inside `<venv>/models/`.
pub const GGUF_NAME: &str = "gemma-3-270m-q4_k_m.gguf";
/// How long [`LlamaServer::start`] and [`LlamaServer::restart`] wait for `READY`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Context tokens per slot.
pub const CTX_PER_SLOT: usize = 512;

/// The repository root: the first ancestor of this crate's manifest dir holding
/// `tools/remote/llama_server.py`.
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|p| p.join("tools/remote/llama_server.py").is_file())
        .unwrap_or(here)
        .to_path_buf()
}

/// The venv `tools/remote/setup.sh` builds: `$TOXDRIFT_REMOTE_VENV` (relative to the repository
/// root when relative), else `<root>/target/remote-venv`.
pub fn venv() -> PathBuf {
    let root = repo_root();
    match std::env::var_os("TOXDRIFT_REMOTE_VENV") {
        Some(v) if !v.is_empty() => root.join(v),
        _ => root.join("target/remote-venv"),
    }
}

/// The venv's Python.
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// The real Gemma-3-270M Q4_K_M GGUF that setup.sh assembles.
pub fn gguf() -> PathBuf {
    venv().join("models").join(GGUF_NAME)
}

fn not_set_up(what: &str, path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "llama.cpp test server: {what} {} is missing; run `bash tools/remote/setup.sh` \
             (it installs the pinned xllamacpp and Gemma-3-270M GGUF into $TOXDRIFT_REMOTE_VENV, \
             default target/remote-venv)",
            path.display()
        ),
    )
}

/// Fails with a message naming `bash tools/remote/setup.sh` when the venv or GGUF is missing.
pub fn check_setup() -> io::Result<()> {
    let script = repo_root().join("tools/remote/llama_server.py");
    if !script.is_file() {
        return Err(not_set_up("script", &script));
    }
    if !python().is_file() {
        return Err(not_set_up("venv python", &python()));
    }
    if !gguf().is_file() {
        return Err(not_set_up("GGUF", &gguf()));
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound then released: another process may race for it, which
/// [`LlamaServer::start`] survives by retrying on a new port).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One llama.cpp server process on 127.0.0.1; killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct LlamaServer {
    port: u16,
    slots: usize,
    threads: usize,
    child: Option<Child>,
    log: PathBuf,
}

impl LlamaServer {
    /// Starts a server with `slots` parallel slots and `threads` CPU threads on a free port, and
    /// waits for it to answer `/health` (at most [`READY_TIMEOUT`]).
    pub fn start(slots: usize, threads: usize) -> io::Result<LlamaServer> {
        check_setup()?;
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            let mut server = LlamaServer {
                port,
                slots,
                threads,
                child: None,
                log: std::env::temp_dir().join(format!(
                    "toxdrift-llama-server-{}-{port}.log",
                    std::process::id()
                )),
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("llama.cpp test server did not start")))
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The server root (llama.cpp's native `/completion`, `/props`, `/health`),
    /// `http://127.0.0.1:PORT`.
    pub fn root_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port (kept across [`LlamaServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, or `None` once killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log (llama.cpp's stderr), kept when a test panics.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server at once (SIGKILL by pid) and reaps it; the port is free when this returns.
    /// A no-op when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port with the same slots and threads (killing it
    /// first when it still runs), and waits for `/health`.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        // The port can be briefly unavailable right after a kill: retry for a few seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The reference for the equality test: `tools/remote/direct_completion.py` on this server,
    /// one direct `/completion` call per prompt with the paper's settings but `n_predict` new
    /// tokens, in order. Returns its
    /// JSON lines: `{"index", "prompt", "text", "tokens", "stop_type", "tokens_predicted",
    /// "tokens_evaluated"}`.
    pub fn direct_completions<S: AsRef<str>>(
        &self,
        prompts: &[S],
        n_predict: usize,
    ) -> io::Result<Vec<String>> {
        let script = repo_root().join("tools/remote/direct_completion.py");
        let mut cmd = Command::new(python());
        cmd.arg(&script).arg("--url").arg(self.root_url());
        cmd.arg("--n-predict").arg(n_predict.to_string());
        for p in prompts {
            cmd.arg("--prompt").arg(p.as_ref());
        }
        let out = cmd.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{} failed ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let text = String::from_utf8(out.stdout)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(text.lines().map(str::to_owned).collect())
    }

    /// Spawns the script on `self.port` and waits for its `READY <port> <pid>` line.
    fn spawn(&mut self) -> io::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let log_start = log.metadata()?.len();
        let mut child = Command::new(python())
            .arg(repo_root().join("tools/remote/llama_server.py"))
            .arg("--model")
            .arg(gguf())
            .args(["--port", &self.port.to_string()])
            .args(["--slots", &self.slots.to_string()])
            .args(["--threads", &self.threads.to_string()])
            .args(["--ctx-size", &CTX_PER_SLOT.to_string()])
            .args(["--alias", MODEL_NAME])
            .arg("--exit-with-parent")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads until the process exits, so its stdout never blocks.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let want = format!("READY {} {}", self.port, child.id());
        let deadline = Instant::now() + READY_TIMEOUT;
        let fail = |child: &mut Child, why: String| {
            let _ = child.kill();
            let _ = child.wait();
            io::Error::other(format!(
                "llama.cpp test server on 127.0.0.1:{}: {why}; log {}:\n{}",
                self.port,
                self.log.display(),
                tail(&self.log, log_start)
            ))
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.trim() == want => break,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait()?;
                    return Err(fail(&mut child, format!("exited before READY ({status})")));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = child.try_wait()? {
                        return Err(fail(&mut child, format!("exited before READY ({status})")));
                    }
                    if Instant::now() > deadline {
                        return Err(fail(
                            &mut child,
                            format!("no READY within {}s", READY_TIMEOUT.as_secs()),
                        ));
                    }
                }
            }
        }
        self.child = Some(child);
        Ok(())
    }
}

/// The last 4 KiB of the log written since `from`.
fn tail(path: &Path, from: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = from.max(len.saturating_sub(4096));
        if f.seek(SeekFrom::Start(start)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "llama.cpp test server log (127.0.0.1:{}): {}",
                self.port,
                self.log.display()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
