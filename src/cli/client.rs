//! The CLI's side of the control API: find the master, send one request, read the JSON answer.
//! HTTP/1.1 by hyper over the Unix socket (or TCP with a bearer token).

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Where the running master is, from the flags or the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoint {
    /// The master's control socket [default: the run directory of `--config`, else
    /// ./hsu-run/hsu.sock].
    #[arg(long, env = "HSU_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    /// The config the master runs; its `master.run_directory` holds the socket.
    #[arg(short = 'c', long, global = true)]
    pub config: Option<PathBuf>,
    /// A TCP address of the API (`master.api.listen`), e.g. 127.0.0.1:7070, instead of the
    /// socket; needs `--token-file` or HSU_TOKEN.
    #[arg(long, env = "HSU_URL", global = true)]
    pub url: Option<String>,
    /// The file with the bearer token (for `--url`); default `<run directory>/api.token`.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// The bearer token itself (for `--url`).
    #[arg(long, env = "HSU_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No master answers where we looked.
    #[error("cannot reach the master at {place}: {reason} (is `hsu run` running? point elsewhere with --socket, -c CONFIG or --url)")]
    Unreachable {
        /// The socket or address tried.
        place: String,
        /// Why.
        reason: String,
    },
    /// The flags do not name a usable endpoint.
    #[error("{0}")]
    Usage(String),
    /// The answer was not what the API promises.
    #[error("unexpected answer from the master: {0}")]
    Protocol(String),
}

/// An HTTP answer: status and the JSON body.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body (JSON).
    pub body: serde_json::Value,
}

enum Target {
    Unix(PathBuf),
    Tcp { address: String, token: String },
}

impl Endpoint {
    fn run_directory(&self) -> Result<PathBuf, ClientError> {
        match &self.config {
            Some(path) => {
                let config = hsu::HsuConfig::load(path)
                    .map_err(|e| ClientError::Usage(hsu::error_chain(&e)))?;
                Ok(config.master.run_directory)
            }
            None => Ok(hsu::MasterConfig::default().run_directory),
        }
    }

    fn target(&self) -> Result<Target, ClientError> {
        if let Some(url) = &self.url {
            let address = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string();
            let token = match (&self.token, &self.token_file) {
                (Some(t), _) => t.clone(),
                (None, file) => {
                    let file = match file {
                        Some(f) => f.clone(),
                        None => self.run_directory()?.join(crate::cli::TOKEN_FILE),
                    };
                    std::fs::read_to_string(&file)
                        .map_err(|e| {
                            ClientError::Usage(format!(
                                "--url needs a token: cannot read `{}`: {e} (give --token-file or HSU_TOKEN)",
                                file.display()
                            ))
                        })?
                        .trim()
                        .to_string()
                }
            };
            return Ok(Target::Tcp { address, token });
        }
        Ok(Target::Unix(match &self.socket {
            Some(s) => s.clone(),
            None => self.run_directory()?.join(crate::cli::SOCKET_FILE),
        }))
    }

    /// Sends `method path` with a text body (YAML or JSON) and returns the answer.
    ///
    /// # Errors
    /// As [`Endpoint::request`].
    pub fn request_text(
        &self,
        method: &str,
        path: &str,
        body: String,
    ) -> Result<Answer, ClientError> {
        self.request(method, path, Some(serde_json::Value::String(body)))
    }

    /// Sends `method path` (with a JSON `body`) and returns the answer, whatever its status.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when nothing answers, `Protocol` for a garbled answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, ClientError> {
        let target = self.target()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot start a runtime: {e}")))?;
        runtime.block_on(send(target, method, path, body))
    }
}

impl Endpoint {
    /// Sends `GET path` and calls `line` with each line of the body as it arrives, until the
    /// body ends (or forever, for a stream). A non-2xx answer is returned as an [`Answer`].
    ///
    /// # Errors
    /// As [`Endpoint::request`].
    pub fn stream_lines(
        &self,
        path: &str,
        mut line: impl FnMut(&str),
    ) -> Result<Option<Answer>, ClientError> {
        let target = self.target()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot start a runtime: {e}")))?;
        runtime.block_on(async move {
            let response = open(target, "GET", path, None).await?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            if !(200..300).contains(&status) {
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| ClientError::Protocol(e.to_string()))?
                    .to_bytes();
                let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                return Ok(Some(Answer { status, body }));
            }
            let mut pending = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    pending.extend_from_slice(&data);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let text = String::from_utf8_lossy(&pending[..end]).into_owned();
                        pending.drain(..=end);
                        line(text.trim_end_matches('\r'));
                    }
                }
            }
            Ok(None)
        })
    }
}

async fn send(
    target: Target,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Answer, ClientError> {
    let response = open(target, method, path, body).await?;
    let status = response.status().as_u16();
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .to_bytes();
    let body = if collected.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&collected).map_err(|e| {
            ClientError::Protocol(format!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&collected)
            ))
        })?
    };
    Ok(Answer { status, body })
}

/// Connects, sends the request, returns the response with its body still to read.
async fn open(
    target: Target,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
    let (place, token) = match &target {
        Target::Unix(p) => (p.display().to_string(), None),
        Target::Tcp { address, token } => (address.clone(), Some(token.clone())),
    };
    let unreachable = |reason: String| ClientError::Unreachable {
        place: place.clone(),
        reason,
    };
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "hsu")
        .header(hyper::header::ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let bytes = match body {
        // A text body (a config) goes as it is.
        Some(serde_json::Value::String(text)) => {
            request = request.header(hyper::header::CONTENT_TYPE, "application/yaml");
            Bytes::from(text)
        }
        Some(b) => {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(bytes))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let response = match target {
        Target::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(&path)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            exchange(TokioIo::new(stream), request, &unreachable).await?
        }
        Target::Tcp { address, .. } => {
            let stream = tokio::net::TcpStream::connect(&address)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            exchange(TokioIo::new(stream), request, &unreachable).await?
        }
    };
    Ok(response)
}

async fn exchange<IO>(
    io: IO,
    request: hyper::Request<Full<Bytes>>,
    unreachable: &dyn Fn(String) -> ClientError,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))
}
