//! A TCP proxy that makes loopback look like a long link.
//!
//!     netdelay --upstream 127.0.0.1:PORT --rtt-ms 50 [--listen 127.0.0.1:0]
//!              [--window BYTES] [--rate BYTES_PER_S]
//!
//! Prints one JSON line `{"pid": .., "endpoint": "http://127.0.0.1:PORT"}` once listening.
//!
//! The model: each direction of each connection is a pipe with a one-way delay of RTT/2.
//! Bytes read on one side are written to the other RTT/2 later, in order, however many are
//! in the pipe (so pipelined traffic is not serialized by the delay). Connection set-up
//! costs one extra RTT, as TCP's handshake does before the first byte can be sent: a
//! client's first request arrives 1.5 RTT after its connect().
//!
//! `--window` bounds the bytes one direction of one connection has in flight, released
//! RTT/2 after they are delivered (the ACK's way back): one stream then moves at most
//! window / RTT, which is why a single TCP stream over a long link is slow and why big
//! objects are fetched as parallel ranges. `--rate` caps the bytes per second of all
//! connections together (the link's bandwidth).
//!
//! Counters (connections, bytes each way) are printed to stderr on SIGTERM / Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::time::Instant;

#[derive(Clone)]
struct Config {
    upstream: String,
    one_way: Duration,
    window: usize,
    rate: Option<Arc<Bucket>>,
}

/// The shared link: a chunk may start only when the bytes before it have drained at `rate`.
struct Bucket {
    bytes_per_s: f64,
    next_free: Mutex<Instant>,
}

impl Bucket {
    async fn pass(&self, n: usize) {
        let start = {
            let mut next = self.next_free.lock().await;
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_s);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static UP_BYTES: AtomicU64 = AtomicU64::new(0);
static DOWN_BYTES: AtomicU64 = AtomicU64::new(0);

fn usage() -> ! {
    eprintln!(
        "usage: netdelay --upstream HOST:PORT --rtt-ms MS [--listen ADDR] [--window BYTES] [--rate BYTES_PER_S]"
    );
    std::process::exit(64);
}

fn parse_args() -> (String, Config) {
    let mut listen = "127.0.0.1:0".to_string();
    let mut upstream = None;
    let mut rtt_ms = 0.0f64;
    let mut window = 0usize;
    let mut rate = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => listen = value(),
            "--upstream" => {
                let v = value();
                let v = v
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string();
                upstream = Some(v);
            }
            "--rtt-ms" => rtt_ms = value().parse().unwrap_or_else(|_| usage()),
            "--window" => window = value().parse().unwrap_or_else(|_| usage()),
            "--rate" => rate = Some(value().parse::<f64>().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    let config = Config {
        upstream: upstream.unwrap_or_else(|| usage()),
        one_way: Duration::from_secs_f64(rtt_ms / 2000.0),
        window,
        rate: rate.map(|r| {
            Arc::new(Bucket {
                bytes_per_s: r,
                next_free: Mutex::new(Instant::now()),
            })
        }),
    };
    (listen, config)
}

#[tokio::main]
async fn main() {
    let (listen, config) = parse_args();
    let listener = TcpListener::bind(&listen).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    println!(
        "{{\"pid\": {}, \"endpoint\": \"http://{addr}\"}}",
        std::process::id()
    );
    tokio::spawn(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        eprintln!(
            "{{\"connections\": {}, \"bytes_up\": {}, \"bytes_down\": {}}}",
            CONNECTIONS.load(Ordering::Relaxed),
            UP_BYTES.load(Ordering::Relaxed),
            DOWN_BYTES.load(Ordering::Relaxed)
        );
        std::process::exit(0);
    });
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let config = config.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            // The handshake's round trip before the client's first byte can leave.
            tokio::time::sleep(config.one_way * 2).await;
            let Ok(server) = TcpStream::connect(&config.upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = tokio::spawn(pipe(cr, sw, config.clone(), &UP_BYTES));
            let down = tokio::spawn(pipe(sr, cw, config, &DOWN_BYTES));
            let _ = tokio::join!(up, down);
        });
    }
}

/// One direction: read, hold for the one-way delay, write; EOF travels the same way.
async fn pipe<R, W>(mut from: R, mut to: W, config: Config, counter: &'static AtomicU64)
where
    R: AsyncReadExt + Unpin + Send + 'static,
    W: AsyncWriteExt + Unpin + Send + 'static,
{
    // In-flight bytes: the window's permits (effectively unlimited without --window).
    let window = Arc::new(Semaphore::new(if config.window == 0 {
        Semaphore::MAX_PERMITS
    } else {
        config.window
    }));
    let chunk_max = if config.window == 0 {
        64 * 1024
    } else {
        config.window.min(64 * 1024)
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let one_way = config.one_way;
    let writer_window = Arc::clone(&window);
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if bytes.is_empty() {
                let _ = to.shutdown().await;
                return;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
            counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if config.window != 0 {
                let w = Arc::clone(&writer_window);
                let n = bytes.len();
                tokio::spawn(async move {
                    tokio::time::sleep(one_way).await;
                    w.add_permits(n);
                });
            }
        }
    });
    let mut buf = vec![0u8; chunk_max];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        if n == 0 {
            let _ = tx.send((Instant::now() + one_way, Vec::new()));
            break;
        }
        if config.window != 0 {
            match window.acquire_many(n as u32).await {
                Ok(p) => p.forget(),
                Err(_) => break,
            }
        }
        if let Some(bucket) = &config.rate {
            bucket.pass(n).await;
        }
        if tx.send((Instant::now() + one_way, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    let _ = writer.await;
}
