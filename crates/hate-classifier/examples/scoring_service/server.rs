//! The scoring service's server logic: a small HTTP/1.1 JSON server on `std::net` that shares one
//! scorer between its connections and batches their texts.
//!
//! - **Threads.** One accept thread; one handler thread per connection (one request per
//!   connection, answered with `Connection: close`); one scorer thread, the only one that runs the
//!   model. Handlers read the shared scorer too (`GET /health` describes it), so the scorer is an
//!   `Arc<S>` with `S: Send + Sync`.
//! - **Batching.** A handler pushes its request's texts onto a bounded queue as one job and waits
//!   for the reply. The scorer thread takes the first job, then keeps taking jobs while they fit
//!   in `batch_size` texts and `max_wait` has not passed since the first, scores all of them with
//!   one [`TextScorer::toxicity`] call and sends each job its slice. A job is never split: one
//!   that would overflow the batch waits for the next, and a single request with more than
//!   `batch_size` texts forms a batch of its own (the scorer then splits it into forward passes
//!   of its own batch size).
//! - **Shutdown.** [`Server::shutdown`] sets a flag and connects once to wake the accept thread,
//!   which then joins every handler and drops its end of the queue; the scorer thread ends when the
//!   queue's last sender is gone, and is joined too. Sockets have read and write timeouts, so a
//!   silent client cannot hold the shutdown up for long.
//!
//! Routes (all bodies JSON):
//!
//! | request | reply |
//! |---|---|
//! | `POST /score` `{"text": "..."}` | `{"score": 0.93, "toxic": true}` |
//! | `POST /score` `{"texts": ["...", ...]}` | `{"scores": [0.93, ...], "toxic": [true, ...]}` |
//! | `GET /health` | `{"status": "ok", "scorer": {"backend": .., "model": .., "settings": ..}}` |
//! | `GET /stats` | `{"requests": .., "texts": .., "batches": .., "multi_text_batches": .., "largest_batch": ..}` |
//!
//! Errors come back as `{"error": "..."}` with 400 (bad JSON, a text the scorer rejects), 404,
//! 405, 413 (body over [`MAX_BODY`]) or 500 (the scorer failed).

use engine_api::TextScorer;
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The largest request body accepted, in bytes.
pub const MAX_BODY: usize = 4 << 20;
/// The longest request head (request line and headers) accepted, in bytes.
const MAX_HEAD: usize = 16 << 10;
/// Read and write timeout of a connection.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How the server batches.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The most texts the scorer thread gathers into one batch (a bigger single request still
    /// goes through whole).
    pub batch_size: usize,
    /// How long the scorer thread waits for more texts after the first of a batch.
    pub max_wait: Duration,
    /// Jobs (requests) the queue holds before handlers block.
    pub queue: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_wait: Duration::from_millis(5),
            queue: 1024,
        }
    }
}

/// Counters of the service, readable while it runs.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicUsize,
    texts: AtomicUsize,
    batches: AtomicUsize,
    multi_text_batches: AtomicUsize,
    largest_batch: AtomicUsize,
}

impl Stats {
    /// Requests answered by `POST /score` (successfully or not).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
    /// Texts scored.
    pub fn texts(&self) -> usize {
        self.texts.load(Ordering::Relaxed)
    }
    /// Batches the scorer thread ran.
    pub fn batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }
    /// Batches that held more than one text.
    pub fn multi_text_batches(&self) -> usize {
        self.multi_text_batches.load(Ordering::Relaxed)
    }
    /// Texts in the largest batch.
    pub fn largest_batch(&self) -> usize {
        self.largest_batch.load(Ordering::Relaxed)
    }

    fn to_json(&self) -> Value {
        json!({
            "requests": self.requests(),
            "texts": self.texts(),
            "batches": self.batches(),
            "multi_text_batches": self.multi_text_batches(),
            "largest_batch": self.largest_batch(),
        })
    }

    fn record_batch(&self, n: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.texts.fetch_add(n, Ordering::Relaxed);
        if n > 1 {
            self.multi_text_batches.fetch_add(1, Ordering::Relaxed);
        }
        self.largest_batch.fetch_max(n, Ordering::Relaxed);
    }
}

/// A scorer's answer to one job: `(score, toxic)` per text, or the error and whether the input
/// was at fault.
type Reply = Result<Vec<(f32, bool)>, (bool, String)>;

/// One request's texts on their way to the scorer thread.
struct Job {
    texts: Vec<String>,
    reply: mpsc::Sender<Reply>,
}

/// A running service. Dropping it without [`Server::shutdown`] leaves it running until the
/// process ends.
pub struct Server {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
    scorer: JoinHandle<()>,
}

/// Everything a connection handler needs.
struct Shared<S> {
    scorer: Arc<S>,
    stats: Arc<Stats>,
    queue: SyncSender<Job>,
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Self {
            scorer: Arc::clone(&self.scorer),
            stats: Arc::clone(&self.stats),
            queue: self.queue.clone(),
        }
    }
}

impl Server {
    /// Binds `addr` (port 0 picks a free port; see [`Server::addr`]) and starts the accept and
    /// scorer threads.
    pub fn start<S>(scorer: Arc<S>, addr: impl ToSocketAddrs, options: Options) -> io::Result<Self>
    where
        S: TextScorer + Send + Sync + 'static,
    {
        if options.batch_size == 0 || options.queue == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "batch_size and queue must be at least 1",
            ));
        }
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel::<Job>(options.queue);

        let scorer_thread = {
            let scorer = Arc::clone(&scorer);
            let stats = Arc::clone(&stats);
            std::thread::Builder::new()
                .name("scorer".into())
                .spawn(move || score_loop(&*scorer, &rx, options, &stats))?
        };
        let shared = Shared {
            scorer,
            stats: Arc::clone(&stats),
            queue: tx,
        };
        let accept = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("accept".into())
                .spawn(move || accept_loop(&listener, &stop, shared))?
        };
        Ok(Self {
            addr,
            stats,
            stop,
            accept,
            scorer: scorer_thread,
        })
    }

    /// The address the service listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The service's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops accepting, lets the requests in flight finish and joins every thread.
    pub fn shutdown(self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept thread; a failure means it is not listening any more.
        let _ = TcpStream::connect(self.addr);
        self.join()
    }

    /// Waits until the service stops (it runs until [`Server::shutdown`] or the process ends).
    pub fn join(self) -> io::Result<()> {
        let panicked = |what: &str| io::Error::other(format!("the {what} thread panicked"));
        self.accept.join().map_err(|_| panicked("accept"))?;
        self.scorer.join().map_err(|_| panicked("scorer"))
    }
}

fn accept_loop<S>(listener: &TcpListener, stop: &AtomicBool, shared: Shared<S>)
where
    S: TextScorer + Send + Sync + 'static,
{
    let mut handlers: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            // E.g. out of file descriptors: back off instead of spinning.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        handlers.retain(|h| !h.is_finished());
        let shared = shared.clone();
        match std::thread::Builder::new()
            .name("handler".into())
            .spawn(move || handle(stream, &shared))
        {
            Ok(h) => handlers.push(h),
            Err(e) => eprintln!("scoring service: cannot start a handler thread: {e}"),
        }
    }
    for h in handlers {
        let _ = h.join();
    }
    // `shared` drops here with the last queue sender outside the handlers: the scorer ends.
}

/// Takes the next batch off the queue: the job held back from the last batch or the next one
/// (blocking), then more while they fit in `batch_size` texts and `max_wait` has not passed. A job
/// that does not fit is held back in `carry` for the next batch; a job bigger than `batch_size`
/// makes a batch on its own. `None` when the queue is closed and empty.
fn next_batch(rx: &Receiver<Job>, carry: &mut Option<Job>, options: Options) -> Option<Vec<Job>> {
    let first = match carry.take() {
        Some(job) => job,
        None => rx.recv().ok()?,
    };
    let mut n = first.texts.len();
    let mut jobs = vec![first];
    let deadline = Instant::now() + options.max_wait;
    while n < options.batch_size {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(job) if n + job.texts.len() > options.batch_size => {
                *carry = Some(job);
                break;
            }
            Ok(job) => {
                n += job.texts.len();
                jobs.push(job);
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(jobs)
}

fn score_loop<S: TextScorer + ?Sized>(
    scorer: &S,
    rx: &Receiver<Job>,
    options: Options,
    stats: &Stats,
) {
    let mut carry = None;
    while let Some(jobs) = next_batch(rx, &mut carry, options) {
        let texts: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.texts.iter().map(String::as_str))
            .collect();
        stats.record_batch(texts.len());
        let error = |e: engine_api::Error| (e.is_bad_input(), e.to_string());
        match scorer.toxicity(&texts) {
            Ok(all) => {
                let mut rest = all.as_slice();
                for job in &jobs {
                    let (mine, others) = rest.split_at(job.texts.len());
                    rest = others;
                    // A handler that gave up (its client left) no longer listens: nothing to do.
                    let _ = job.reply.send(Ok(mine.to_vec()));
                }
            }
            // One request's bad text must not fail the others batched with it: score each alone.
            Err(_) if jobs.len() > 1 => {
                for job in &jobs {
                    let texts: Vec<&str> = job.texts.iter().map(String::as_str).collect();
                    let _ = job.reply.send(scorer.toxicity(&texts).map_err(error));
                }
            }
            Err(e) => {
                let _ = jobs[0].reply.send(Err(error(e)));
            }
        }
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// An HTTP error status with its message.
struct Status(u16, String);

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn read_request(stream: &TcpStream) -> Result<Request, Status> {
    let bad = |m: &str| Status(400, m.to_string());
    let mut reader = BufReader::new(stream);
    let mut head = 0usize;
    let mut line = String::new();
    let mut next_line = |reader: &mut BufReader<&TcpStream>| -> Result<String, Status> {
        line.clear();
        let n = reader
            .by_ref()
            .take((MAX_HEAD - head) as u64 + 1)
            .read_line(&mut line)
            .map_err(|e| bad(&format!("cannot read the request: {e}")))?;
        head += n;
        if head > MAX_HEAD {
            return Err(Status(413, "request head too large".into()));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let request_line = next_line(&mut reader)?;
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad("only HTTP/1.x is spoken here"));
    }
    let (method, path) = (method.to_string(), target.to_string());
    let mut length = 0usize;
    loop {
        let header = next_line(&mut reader)?;
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(bad("malformed header"));
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .trim()
                .parse()
                .map_err(|_| bad("bad Content-Length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad("chunked bodies are not supported; send Content-Length"));
        }
    }
    if length > MAX_BODY {
        return Err(Status(413, format!("body over {MAX_BODY} bytes")));
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| bad(&format!("cannot read the body: {e}")))?;
    Ok(Request { method, path, body })
}

fn write_response(mut stream: &TcpStream, code: u16, body: &str) -> io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        reason(code),
        body.len()
    )?;
    stream.flush()
}

fn handle<S>(stream: TcpStream, shared: &Shared<S>)
where
    S: TextScorer + Send + Sync + 'static,
{
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let (code, body) = match read_request(&stream).and_then(|r| route(&r, shared)) {
        Ok(body) => (200, body),
        Err(Status(code, message)) => (code, json!({ "error": message }).to_string()),
    };
    // The client may have gone; there is no one left to tell.
    let _ = write_response(&stream, code, &body);
}

/// The JSON text of a route's reply.
fn route<S>(request: &Request, shared: &Shared<S>) -> Result<String, Status>
where
    S: TextScorer + Send + Sync + 'static,
{
    let path = request.path.split('?').next().unwrap_or_default();
    match (request.method.as_str(), path) {
        ("POST", "/score") => {
            shared.stats.requests.fetch_add(1, Ordering::Relaxed);
            score(&request.body, shared)
        }
        ("GET", "/health") => Ok(json!({
            "status": "ok",
            "scorer": shared.scorer.describe(),
        })
        .to_string()),
        ("GET", "/stats") => Ok(shared.stats.to_json().to_string()),
        (_, "/score" | "/health" | "/stats") => Err(Status(
            405,
            format!("{} is not allowed on {path}", request.method),
        )),
        _ => Err(Status(404, format!("no route {path}"))),
    }
}

fn score<S>(body: &[u8], shared: &Shared<S>) -> Result<String, Status>
where
    S: TextScorer + Send + Sync + 'static,
{
    let bad = |m: String| Status(400, m);
    let body: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
    let as_text = |v: &Value| v.as_str().map(str::to_string);
    let (texts, single) = match (body.get("text"), body.get("texts")) {
        (Some(t), None) => (
            vec![as_text(t).ok_or_else(|| bad("`text` must be a string".into()))?],
            true,
        ),
        (None, Some(Value::Array(ts))) => (
            ts.iter()
                .map(as_text)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("`texts` must be an array of strings".into()))?,
            false,
        ),
        _ => {
            return Err(bad(
                "expected {\"text\": \"...\"} or {\"texts\": [\"...\", ...]}".into(),
            ));
        }
    };
    let results = if texts.is_empty() {
        Vec::new()
    } else {
        let (reply, wait) = mpsc::channel();
        shared
            .queue
            .send(Job { texts, reply })
            .map_err(|_| Status(503, "the scorer has stopped".into()))?;
        wait.recv()
            .map_err(|_| Status(500, "the scorer dropped the request".into()))?
            .map_err(|(bad_input, m)| Status(if bad_input { 400 } else { 500 }, m))?
    };
    // Serialised from `f32` (not through `serde_json::Value`, which widens to `f64`): a score
    // is written in its shortest form that reads back as the same `f32` (`0.03`, not
    // `0.029999999329447746`).
    #[derive(Serialize)]
    struct One {
        score: f32,
        toxic: bool,
    }
    #[derive(Serialize)]
    struct Many {
        scores: Vec<f32>,
        toxic: Vec<bool>,
    }
    let text = if single {
        let (score, toxic) = results[0];
        serde_json::to_string(&One { score, toxic })
    } else {
        let (scores, toxic) = results.into_iter().unzip();
        serde_json::to_string(&Many { scores, toxic })
    };
    text.map_err(|e| Status(500, format!("cannot write the reply: {e}")))
}
