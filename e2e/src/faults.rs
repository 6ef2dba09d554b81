//! Faults in transit for the sync engine's tests: a stream that breaks after some bytes, or flips one.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wraps one end of a connection; what it writes can be cut off or corrupted, what it reads passes.
pub struct Tamper<S> {
    inner: S,
    written: u64,
    /// Writes fail with a broken pipe once this many bytes went through.
    pub cut_at: Option<u64>,
    /// The byte written at this position goes out with its lowest bit flipped.
    pub flip_at: Option<u64>,
}

impl<S> Tamper<S> {
    pub fn new(inner: S) -> Self {
        Tamper {
            inner,
            written: 0,
            cut_at: None,
            flip_at: None,
        }
    }

    pub fn cut_at(mut self, at: u64) -> Self {
        self.cut_at = Some(at);
        self
    }

    pub fn flip_at(mut self, at: u64) -> Self {
        self.flip_at = Some(at);
        self
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tamper<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tamper<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut len = buf.len();
        if let Some(cut) = self.cut_at {
            if self.written >= cut {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            len = len.min((cut - self.written) as usize);
        }
        let start = self.written;
        let result = match self.flip_at {
            Some(at) if at >= start && at < start + len as u64 => {
                let mut copy = buf[..len].to_vec();
                copy[(at - start) as usize] ^= 1;
                Pin::new(&mut self.inner).poll_write(cx, &copy)
            }
            _ => Pin::new(&mut self.inner).poll_write(cx, &buf[..len]),
        };
        if let Poll::Ready(Ok(n)) = result {
            self.written += n as u64;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP relay to `upstream` whose connections, in the order they arrive, get the faults queued for them:
/// what the client sends passes through a [`Tamper`]; connections beyond the queue pass untouched.
pub struct FaultyLink {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// The faults of one connection through a [`FaultyLink`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkFault {
    pub cut_at: Option<u64>,
    pub flip_at: Option<u64>,
}

impl FaultyLink {
    pub async fn start(
        listen_ip: &str,
        upstream: std::net::SocketAddr,
        faults: Vec<LinkFault>,
    ) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind((listen_ip, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut faults = faults.into_iter();
            while let Ok((client, _)) = listener.accept().await {
                let fault = faults.next().unwrap_or_default();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, client_write) = tokio::io::split(client);
                    let (mut server_read, server_write) = tokio::io::split(server);
                    let mut towards_server = Tamper {
                        inner: server_write,
                        written: 0,
                        cut_at: fault.cut_at,
                        flip_at: fault.flip_at,
                    };
                    let mut towards_client = client_write;
                    // Either direction ending (a cut included) ends the connection, as a broken link does.
                    tokio::select! {
                        _ = tokio::io::copy(&mut client_read, &mut towards_server) => {}
                        _ = tokio::io::copy(&mut server_read, &mut towards_client) => {}
                    }
                });
            }
        });
        Ok(FaultyLink { addr, task })
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}
