//! A mock's connection that can end in a TCP reset: the `reset` fault. Hyper owns the stream while
//! it serves it, so the handler cannot reach the socket; it raises a flag instead, and the stream
//! sets a zero linger as it is dropped, which makes the kernel send RST in place of FIN. A client
//! then sees "connection reset by peer", not a clean close (that is the `drop` fault).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Raised by the handler; read when the connection's stream is dropped.
#[derive(Clone, Default)]
pub struct ResetFlag(Arc<AtomicBool>);

impl ResetFlag {
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A TCP stream that resets instead of closing when its flag was raised.
pub struct ResettableStream {
    stream: TcpStream,
    flag: ResetFlag,
}

impl ResettableStream {
    pub fn new(stream: TcpStream) -> (ResettableStream, ResetFlag) {
        let flag = ResetFlag::default();
        (
            ResettableStream {
                stream,
                flag: flag.clone(),
            },
            flag,
        )
    }
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.flag.0.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.flag.0.load(Ordering::SeqCst) {
            // A graceful shutdown would send FIN before the drop's RST.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
