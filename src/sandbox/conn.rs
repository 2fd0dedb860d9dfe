//! The sandbox's accept loop, and a connection wrapper that lets a handler break the connection
//! in ways a normal HTTP server never would: a reset without any response bytes, or a response
//! cut short of its `Content-Length`. `axum::serve` hides the socket, hence the own loop.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower::Service;
use tracing::{debug, info, warn};

use super::lock;

/// How long to pause after a failed accept (typically out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until `shutdown` resolves, then asks every connection to finish its
/// request in flight and close, and waits until they have.
pub(super) async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop, stopped) = watch::channel(());
    // Every connection task holds a sender; when the last one drops, `recv` returns `None`.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let mut shutdown = pin!(shutdown);
    info!(addr = %listener.local_addr()?, "tiktok sandbox listening");

    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    warn!(%error, "sandbox failed to accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        spawn_connection(router.clone(), stream, stopped.clone(), alive.clone());
    }

    drop(listener);
    stop.send_replace(());
    drop(alive);
    let _ = all_closed.recv().await;
    Ok(())
}

fn spawn_connection(
    router: Router,
    stream: TcpStream,
    mut stop: watch::Receiver<()>,
    alive: mpsc::Sender<()>,
) {
    // Small JSON answers: waiting for Nagle would only add latency to the benchmark.
    let _ = stream.set_nodelay(true);
    let faults = ConnectionFaults::default();
    let io = TokioIo::new(FaultableStream {
        inner: stream,
        faults: faults.clone(),
        cut: None,
    });
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(faults.clone());
        router.clone().call(request)
    });

    tokio::spawn(async move {
        let _alive = alive;
        let mut builder = http1::Builder::new();
        // The timer lets hyper enforce its header read timeout against idle half-open clients.
        builder.timer(TokioTimer::new());
        let mut connection = pin!(builder.serve_connection(io, service));
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = stop.changed() => {
                connection.as_mut().graceful_shutdown();
                connection.as_mut().await
            }
        };
        // Faults end connections with errors on purpose, so this is not worth more than debug.
        if let Err(error) = result {
            debug!(%error, "sandbox connection ended with an error");
        }
    });
}

/// What a handler wants done to the connection its request came on.
#[derive(Clone, Copy, Debug, Default)]
enum Sabotage {
    #[default]
    None,
    /// Fail every write and close with RST.
    Reset,
    /// Let the response head and this many body bytes through, then fail.
    Truncate { body_bytes: usize },
}

/// A handle on the connection a request came on, put into each request's extensions.
#[derive(Clone, Debug, Default)]
pub(super) struct ConnectionFaults(Arc<Mutex<Sabotage>>);

impl ConnectionFaults {
    /// The connection will send no bytes of the answer and close with a TCP RST.
    pub(super) fn reset(&self) {
        *lock(&self.0) = Sabotage::Reset;
    }

    /// The connection will send the answer's head and `body_bytes` of its body, then close.
    pub(super) fn truncate_body(&self, body_bytes: usize) {
        *lock(&self.0) = Sabotage::Truncate { body_bytes };
    }

    fn current(&self) -> Sabotage {
        *lock(&self.0)
    }
}

/// A TCP stream that obeys its connection's [`Sabotage`] when hyper writes the answer.
struct FaultableStream {
    inner: TcpStream,
    faults: ConnectionFaults,
    cut: Option<Cut>,
}

impl FaultableStream {
    fn poll_write_cut(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        body_bytes: usize,
    ) -> Poll<io::Result<usize>> {
        let cut = self.cut.get_or_insert_with(|| Cut::new(body_bytes));
        let allowed = cut.allowed(buf);
        if allowed == 0 {
            // Hyper gives up on the connection and drops it: a normal close (FIN) after the
            // partial answer, which the client sees as a body shorter than announced.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "sandbox fault: answer truncated",
            )));
        }
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..allowed]))?;
        cut.advance(&buf[..written]);
        Poll::Ready(Ok(written))
    }
}

fn reset_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "sandbox fault: connection reset",
    )
}

impl AsyncRead for FaultableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.faults.current() {
            Sabotage::None => Pin::new(&mut self.inner).poll_write(cx, buf),
            Sabotage::Reset => Poll::Ready(Err(reset_error())),
            Sabotage::Truncate { body_bytes } => self.poll_write_cut(cx, buf, body_bytes),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.faults.current() {
            Sabotage::Reset => Poll::Ready(Err(reset_error())),
            _ => Pin::new(&mut self.inner).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.faults.current() {
            Sabotage::Reset => Poll::Ready(Err(reset_error())),
            _ => Pin::new(&mut self.inner).poll_shutdown(cx),
        }
    }
}

impl Drop for FaultableStream {
    fn drop(&mut self) {
        if let Sabotage::Reset = self.faults.current() {
            // A zero linger time makes the kernel answer close() with RST instead of FIN. The
            // fields drop after this, so the socket closes with the option already set.
            if let Err(error) = SockRef::from(&self.inner).set_linger(Some(Duration::ZERO)) {
                warn!(%error, "sandbox could not arm a reset; the connection closes normally");
            }
        }
    }
}

/// Progress through an answer that must stop early: the head passes whole (it ends at the first
/// blank line), then at most `body_left` bytes.
#[derive(Debug)]
struct Cut {
    /// How much of `\r\n\r\n` the bytes written so far end with.
    head_matched: usize,
    head_done: bool,
    body_left: usize,
}

const HEAD_END: &[u8; 4] = b"\r\n\r\n";

impl Cut {
    fn new(body_bytes: usize) -> Cut {
        Cut {
            head_matched: 0,
            head_done: false,
            body_left: body_bytes,
        }
    }

    /// How many leading bytes of `buf` may go out.
    fn allowed(&self, buf: &[u8]) -> usize {
        if self.head_done {
            return buf.len().min(self.body_left);
        }
        match self.head_end(buf) {
            Some(end) => end + (buf.len() - end).min(self.body_left),
            None => buf.len(),
        }
    }

    /// Accounts for bytes that went out.
    fn advance(&mut self, written: &[u8]) {
        let body = if self.head_done {
            written
        } else if let Some(end) = self.head_end(written) {
            self.head_done = true;
            &written[end..]
        } else {
            self.head_matched = written.iter().fold(self.head_matched, |m, &b| step(m, b));
            &[]
        };
        self.body_left = self.body_left.saturating_sub(body.len());
    }

    /// Where the head ends within `buf`, if it does.
    fn head_end(&self, buf: &[u8]) -> Option<usize> {
        let mut matched = self.head_matched;
        for (at, &byte) in buf.iter().enumerate() {
            matched = step(matched, byte);
            if matched == HEAD_END.len() {
                return Some(at + 1);
            }
        }
        None
    }
}

/// One step of matching `\r\n\r\n`: after a mismatch, a `\r` may start a new match.
fn step(matched: usize, byte: u8) -> usize {
    if byte == HEAD_END[matched] {
        matched + 1
    } else {
        usize::from(byte == b'\r')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cut: &mut Cut, writes: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for write in writes {
            let allowed = cut.allowed(write);
            out.extend_from_slice(&write[..allowed]);
            cut.advance(&write[..allowed]);
        }
        out
    }

    #[test]
    fn cut_passes_the_head_and_part_of_the_body() {
        let mut cut = Cut::new(3);
        let out = run(
            &mut cut,
            &[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789"],
        );
        assert_eq!(out, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n012");
        assert_eq!(cut.allowed(b"more"), 0);
    }

    #[test]
    fn cut_finds_a_head_end_split_across_writes() {
        let mut cut = Cut::new(2);
        let out = run(
            &mut cut,
            &[b"HTTP/1.1 200 OK\r\na: b\r", b"\n\r", b"\nabcdef", b"gh"],
        );
        assert_eq!(out, b"HTTP/1.1 200 OK\r\na: b\r\n\r\nab");
    }

    #[test]
    fn a_stray_return_restarts_the_match() {
        let mut cut = Cut::new(0);
        let out = run(&mut cut, &[b"HTTP/1.1 200 OK\r\n\r\r\n", b"\r\nbody"]);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\n\r\r\n\r\n");
    }
}
