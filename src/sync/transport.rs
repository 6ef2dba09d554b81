//! One TLS port between sync sidecars. The receiver serves its certificate (rustls, ALPN
//! `cephdr-sync/1`); the sender checks it against a CA and then presents a bearer token on one line,
//! which the receiver compares in constant time with the lines of its token file (re-read when it
//! changes, so tokens rotate without a restart) before it reads a single frame. The receiver answers
//! `ok` or `denied`; the frames of [`super::session`] follow on the same stream.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use crate::agent::{
    remote::{client_tls_config, ConfigError},
    server::{server_tls_config, ServeError, TlsFiles, Tokens},
    Sensitive,
};

pub const ALPN: &[u8] = b"cephdr-sync/1";
/// A token line longer than this is refused unread.
const MAX_TOKEN_LINE: usize = 4096;
/// A peer gets this long for the TLS handshake and its token.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS setup of the receiver failed")]
    Serve(#[from] ServeError),
    #[error("TLS setup of the sender failed")]
    Config(#[from] ConfigError),
    #[error("connection failed")]
    Io(#[from] std::io::Error),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("the peer did not complete the TLS handshake and token within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error("the receiver refused the token")]
    Denied,
    #[error("the sender presented no valid token")]
    Unauthenticated,
}

/// The receiver's listening port.
pub struct SyncListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tokens: Arc<Tokens>,
}

impl SyncListener {
    pub async fn bind(addr: SocketAddr, tls: &TlsFiles, tokens: Tokens) -> Result<Self, TransportError> {
        let acceptor = TlsAcceptor::from(Arc::new(server_tls_config(tls, ALPN)?));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(SyncListener {
            listener,
            acceptor,
            tokens: Arc::new(tokens),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, not yet authenticated: run [`Incoming::authenticate`] in a task of its own
    /// so a slow peer does not hold up the others.
    pub async fn accept(&self) -> std::io::Result<Incoming> {
        let (tcp, peer) = self.listener.accept().await?;
        Ok(Incoming {
            tcp,
            peer,
            acceptor: self.acceptor.clone(),
            tokens: self.tokens.clone(),
        })
    }
}

pub struct Incoming {
    tcp: TcpStream,
    pub peer: SocketAddr,
    acceptor: TlsAcceptor,
    tokens: Arc<Tokens>,
}

impl Incoming {
    /// The TLS handshake, then the sender's token: the stream to receive on, or why not.
    pub async fn authenticate(self) -> Result<server::TlsStream<TcpStream>, TransportError> {
        let Incoming {
            tcp,
            acceptor,
            tokens,
            ..
        } = self;
        let handshake = async move {
            tcp.set_nodelay(true)?;
            let mut tls = acceptor.accept(tcp).await?;
            let token = read_line(&mut tls).await?;
            let accepted = match &token {
                Some(token) => tokens.accepts(token.expose()).await,
                None => false,
            };
            tls.write_all(if accepted { b"ok\n" } else { b"denied\n" })
                .await?;
            tls.flush().await?;
            if accepted {
                Ok(tls)
            } else {
                Err(TransportError::Unauthenticated)
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| TransportError::Timeout)?
    }
}

/// Reads one line of at most [`MAX_TOKEN_LINE`] bytes, byte by byte so nothing after it is consumed;
/// `None` when it is longer or not UTF-8.
async fn read_line<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Sensitive<String>>> {
    let mut line = Vec::new();
    loop {
        let byte = r.read_u8().await?;
        if byte == b'\n' {
            break;
        }
        if line.len() == MAX_TOKEN_LINE {
            return Ok(None);
        }
        line.push(byte);
    }
    Ok(String::from_utf8(line).ok().map(Sensitive))
}

/// Connects to a receiver at `addr`, checks its certificate for `server_name` against `ca_pem` (the
/// system's roots without it), and presents `token`.
pub async fn connect(
    addr: &str,
    server_name: &str,
    ca_pem: Option<&[u8]>,
    token: &Sensitive<String>,
) -> Result<client::TlsStream<TcpStream>, TransportError> {
    let mut config = client_tls_config(ca_pem)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| TransportError::ServerName(server_name.into()))?;
    let handshake = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
        tls.write_all(format!("{}\n", token.expose()).as_bytes()).await?;
        tls.flush().await?;
        let mut answer = [0u8; 3];
        match tls.read_exact(&mut answer).await {
            Ok(_) if &answer == b"ok\n" => Ok(tls),
            Ok(_) => Err(TransportError::Denied),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(TransportError::Denied),
            Err(e) => Err(e.into()),
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| TransportError::Timeout)?
}
