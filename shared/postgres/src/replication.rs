//! A physical replication connection of our own (`replication=true`),
//! speaking the frontend/backend protocol through `postgres-protocol`: the
//! start-up and authentication (trust, password, MD5, SCRAM-SHA-256), the
//! simple query protocol (the only one a physical walsender takes) and the
//! messages of a COPY OUT. `tokio-postgres` opens no replication
//! connections, and `pg_basebackup` cannot hand over a server-compressed
//! backup with its manifest on a pipe, so the base backup speaks to the
//! walsender itself (see `basebackup::stream`).
//!
//! Like [`crate::pg::connect`] it connects without TLS (`sslmode=require`
//! is refused with that said); the URL is parsed by `tokio-postgres`, so
//! both connections read a URL the same way.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::{Config, Host, SslMode};

use crate::pg::{PgError, redact_url};

/// How long the TCP or socket connection may take when the URL sets no
/// `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes asked of the socket at a time.
const READ: usize = 256 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One replication connection, ready for a command.
pub(crate) struct Replication {
    io: Box<dyn Io>,
    buf: BytesMut,
    /// The URL without its password, for messages.
    target: String,
}

/// One result set of a simple query: its rows, each column as text.
pub(crate) type Rows = Vec<Vec<Option<String>>>;

impl Replication {
    /// Connects to the URL's first host that answers and authenticates.
    pub(crate) async fn connect(url: &str) -> Result<Self, PgError> {
        let target = redact_url(url);
        let refused = |message: String| PgError::Connect {
            target: target.clone(),
            message,
        };
        let config = Config::from_str(url).map_err(|_| PgError::Url(target.clone()))?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(refused(
                "sslmode=require: Backstop's PostgreSQL connections do not use TLS; reach the server over a private network or a Unix socket".into(),
            ));
        }
        let user = config
            .get_user()
            .ok_or_else(|| refused("the URL names no user".into()))?
            .to_string();
        let io = open(&config).await.map_err(refused)?;
        let mut conn = Replication {
            io,
            buf: BytesMut::with_capacity(READ),
            target: target.clone(),
        };
        conn.start_up(&user, config.get_password())
            .await
            .map_err(|e| refused(e.to_string()))?;
        Ok(conn)
    }

    async fn start_up(&mut self, user: &str, password: Option<&[u8]>) -> Result<(), PgError> {
        let mut out = BytesMut::new();
        let params = [
            ("user", user),
            ("replication", "true"),
            ("application_name", "backstop"),
        ];
        frontend::startup_message(params.iter().copied(), &mut out).map_err(|e| self.io_err(e))?;
        self.send(out).await?;
        self.authenticate(user, password).await?;
        loop {
            match self.next().await? {
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ParameterStatus(_) | Message::BackendKeyData(_) => {}
                other => return Err(self.unexpected(&other, "the start-up")),
            }
        }
    }

    async fn authenticate(&mut self, user: &str, password: Option<&[u8]>) -> Result<(), PgError> {
        let needed = || PgError::Query {
            what: "authentication".into(),
            message: "the server asks for a password and the URL has none".into(),
        };
        let mut out = BytesMut::new();
        match self.next().await? {
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(password.ok_or_else(needed)?, &mut out)
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = md5_hash(user.as_bytes(), password.ok_or_else(needed)?, body.salt());
                frontend::password_message(hash.as_bytes(), &mut out)
            }
            Message::AuthenticationSasl(body) => {
                let mut scram_offered = false;
                let mut mechanisms = body.mechanisms();
                while let Some(m) = mechanisms.next().map_err(|e| self.io_err(e))? {
                    scram_offered |= m == sasl::SCRAM_SHA_256;
                }
                if !scram_offered {
                    return Err(self.refusal("the server offers no SASL mechanism but SCRAM-SHA-256-PLUS, which needs TLS"));
                }
                return self.scram(password.ok_or_else(needed)?).await;
            }
            other => return Err(self.unexpected(&other, "authentication")),
        }
        .map_err(|e| self.io_err(e))?;
        self.send(out).await?;
        match self.next().await? {
            Message::AuthenticationOk => Ok(()),
            other => Err(self.unexpected(&other, "authentication")),
        }
    }

    async fn scram(&mut self, password: &[u8]) -> Result<(), PgError> {
        let mut scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
        let mut out = BytesMut::new();
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut out)
            .map_err(|e| self.io_err(e))?;
        self.send(out).await?;
        let body = match self.next().await? {
            Message::AuthenticationSaslContinue(body) => body,
            other => return Err(self.unexpected(&other, "SCRAM authentication")),
        };
        scram.update(body.data()).map_err(|e| self.io_err(e))?;
        let mut out = BytesMut::new();
        frontend::sasl_response(scram.message(), &mut out).map_err(|e| self.io_err(e))?;
        self.send(out).await?;
        match self.next().await? {
            Message::AuthenticationSaslFinal(body) => {
                scram.finish(body.data()).map_err(|e| self.io_err(e))?
            }
            other => return Err(self.unexpected(&other, "SCRAM authentication")),
        }
        match self.next().await? {
            Message::AuthenticationOk => Ok(()),
            other => Err(self.unexpected(&other, "SCRAM authentication")),
        }
    }

    /// Sends one command by the simple query protocol.
    pub(crate) async fn command(&mut self, sql: &str) -> Result<(), PgError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| self.io_err(e))?;
        self.send(out).await
    }

    /// Reads one result set (row description, rows, command complete).
    pub(crate) async fn result_set(&mut self, what: &str) -> Result<Rows, PgError> {
        let mut rows = Rows::new();
        loop {
            match self.next().await? {
                Message::RowDescription(_) => {}
                Message::DataRow(row) => {
                    let buf = row.buffer();
                    let columns = row
                        .ranges()
                        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
                        .collect()
                        .map_err(|e| self.io_err(e))?;
                    rows.push(columns);
                }
                Message::CommandComplete(_) => return Ok(rows),
                other => return Err(self.unexpected(&other, what)),
            }
        }
    }

    /// Runs a command that answers one result set, up to ReadyForQuery.
    pub(crate) async fn query(&mut self, sql: &str) -> Result<Rows, PgError> {
        self.command(sql).await?;
        let rows = self.result_set(sql).await?;
        self.ready(sql).await?;
        Ok(rows)
    }

    /// Reads up to the server's ReadyForQuery.
    pub(crate) async fn ready(&mut self, what: &str) -> Result<(), PgError> {
        match self.next().await? {
            Message::ReadyForQuery(_) => Ok(()),
            other => Err(self.unexpected(&other, what)),
        }
    }

    /// The next message, notices logged and skipped; the server's error
    /// is [`PgError::Query`] with its SQLSTATE, message, detail and hint.
    pub(crate) async fn next(&mut self) -> Result<Message, PgError> {
        loop {
            if let Some(message) = Message::parse(&mut self.buf).map_err(|e| self.io_err(e))? {
                match message {
                    Message::ErrorResponse(body) => {
                        return Err(PgError::Query {
                            what: "replication".into(),
                            message: describe(body.fields()),
                        });
                    }
                    Message::NoticeResponse(body) => {
                        let notice = describe(body.fields());
                        tracing::info!(event = "server_notice", server = %self.target, notice = %notice, "the server says: {notice}");
                    }
                    other => return Ok(other),
                }
                continue;
            }
            self.buf.reserve(READ);
            let n = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| self.io_err(e))?;
            if n == 0 {
                return Err(PgError::Query {
                    what: "replication".into(),
                    message: format!(
                        "the server closed the connection ({} bytes of an unfinished message left)",
                        self.buf.remaining()
                    ),
                });
            }
        }
    }

    /// Says goodbye (Terminate), so the server logs no lost connection.
    pub(crate) async fn close(&mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.send(out).await;
    }

    async fn send(&mut self, out: BytesMut) -> Result<(), PgError> {
        self.io.write_all(&out).await.map_err(|e| self.io_err(e))?;
        self.io.flush().await.map_err(|e| self.io_err(e))
    }

    fn io_err(&self, e: std::io::Error) -> PgError {
        PgError::Query {
            what: "replication".into(),
            message: format!("the connection to {} failed: {e}", self.target),
        }
    }

    fn refusal(&self, message: &str) -> PgError {
        PgError::Query {
            what: "authentication".into(),
            message: message.into(),
        }
    }

    pub(crate) fn unexpected(&self, message: &Message, during: &str) -> PgError {
        PgError::Query {
            what: during.into(),
            message: format!(
                "the server sent an unexpected message ({}) during {during}",
                message_name(message)
            ),
        }
    }
}

/// The first of the URL's hosts that accepts a connection in time.
async fn open(config: &Config) -> Result<Box<dyn Io>, String> {
    let timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT);
    let ports = config.get_ports();
    let mut failures = Vec::new();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let attempt = async {
            match host {
                Host::Tcp(name) => tokio::net::TcpStream::connect((name.as_str(), port))
                    .await
                    .map(|s| {
                        let _ = s.set_nodelay(true);
                        Box::new(s) as Box<dyn Io>
                    }),
                Host::Unix(dir) => tokio::net::UnixStream::connect(socket(dir, port))
                    .await
                    .map(|s| Box::new(s) as Box<dyn Io>),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(io)) => return Ok(io),
            Ok(Err(e)) => failures.push(format!("{host:?} port {port}: {e}")),
            Err(_) => failures.push(format!("{host:?} port {port}: no answer in {timeout:?}")),
        }
    }
    if failures.is_empty() {
        return Err("the URL names no host".into());
    }
    Err(failures.join("; "))
}

fn socket(dir: &Path, port: u16) -> std::path::PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

/// `SQLSTATE: message (detail) hint`, as psql shows an error.
fn describe(mut fields: ErrorFields<'_>) -> String {
    let (mut code, mut message, mut detail, mut hint) = (None, None, None, None);
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = Some(value),
            b'M' => message = Some(value),
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            _ => {}
        }
    }
    let mut text = format!(
        "{}: {}",
        code.as_deref().unwrap_or("?????"),
        message.as_deref().unwrap_or("(no message)")
    );
    if let Some(detail) = detail {
        text.push_str(&format!(" ({detail})"));
    }
    if let Some(hint) = hint {
        text.push_str(&format!("; hint: {hint}"));
    }
    text
}

fn message_name(message: &Message) -> &'static str {
    match message {
        Message::AuthenticationOk => "AuthenticationOk",
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::DataRow(_) => "DataRow",
        Message::EmptyQueryResponse => "EmptyQueryResponse",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::RowDescription(_) => "RowDescription",
        Message::ParameterStatus(_) => "ParameterStatus",
        Message::BackendKeyData(_) => "BackendKeyData",
        Message::AuthenticationGss | Message::AuthenticationSspi => "GSS/SSPI authentication",
        Message::AuthenticationKerberosV5 => "Kerberos authentication",
        _ => "another message",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_where_libpq_looks() {
        assert_eq!(
            socket(Path::new("/run/postgresql"), 5433),
            Path::new("/run/postgresql/.s.PGSQL.5433")
        );
    }
}
