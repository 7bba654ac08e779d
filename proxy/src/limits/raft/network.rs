//! Raft traffic between replicas, over HTTP/1 with JSON bodies on the
//! Raft listener (`raft.listen`, else the replica's own peer address):
//! `POST /raft/append`, `/raft/vote`, `/raft/snapshot` (openraft's RPCs),
//! `POST /raft/write` (a follower forwarding a counter command to the
//! leader) and `GET /raft/status` (is this node part of a cluster yet).
//! When the listener has a specific IP, outgoing connections are made
//! from it too, so a replica is known by one address (which is what lets
//! the fault tests cut one replica off on loopback). A shared token
//! (`SLUICE_RAFT_TOKEN`), when set, is required on every request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Snapshot, SnapshotMeta, Vote};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::types::{Raft, Reply, Request as Proposal, TypeConfig};
use crate::body::ResponseBody;

/// Largest Raft request body accepted (a snapshot of every counter).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// The HTTP client every peer connection shares (pooled, keep-alive).
#[derive(Clone)]
pub struct PeerHttp {
    client: Client<HttpConnector, Full<Bytes>>,
    token: Option<Arc<str>>,
}

/// A failed call to a peer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CallError(pub String);

impl PeerHttp {
    /// A client whose connections come from `source` when set.
    pub fn new(source: Option<IpAddr>, token: Option<Arc<str>>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_local_address(source);
        connector.set_connect_timeout(Some(Duration::from_millis(500)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client, token }
    }

    /// `POST http://{addr}{path}` with `body` as JSON, within `timeout`.
    pub async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Q,
        timeout: Duration,
    ) -> Result<A, CallError> {
        let bytes = serde_json::to_vec(body).map_err(|e| CallError(e.to_string()))?;
        self.send(Method::POST, addr, path, bytes, timeout).await
    }

    /// `GET http://{addr}{path}`, within `timeout`.
    pub async fn get<A: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<A, CallError> {
        self.send(Method::GET, addr, path, Vec::new(), timeout)
            .await
    }

    async fn send<A: DeserializeOwned>(
        &self,
        method: Method,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<A, CallError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| CallError(format!("{addr}: {}", crate::upstream::describe(&e))))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| CallError(format!("{addr}: {e}")))?
                .to_bytes();
            if !status.is_success() {
                return Err(CallError(format!(
                    "{addr}{path}: {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )));
            }
            serde_json::from_slice(&body).map_err(|e| CallError(format!("{addr}{path}: {e}")))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallError(format!("{addr}{path}: no answer within {timeout:?}")))?
    }
}

/// Makes a connection object per peer (connects lazily).
pub struct Network {
    pub http: PeerHttp,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        PeerConnection {
            http: self.http.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// openraft's view of one peer.
pub struct PeerConnection {
    http: PeerHttp,
    target: u64,
    addr: String,
}

type RpcError<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl PeerConnection {
    async fn rpc<Q: Serialize, A: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
        option: &RPCOption,
    ) -> Result<A, RpcError<E>> {
        let answer: Result<A, RaftError<u64, E>> = self
            .http
            .call(&self.addr, path, body, option.hard_ttl())
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// A whole snapshot on the wire.
#[derive(Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub vote: Vote<u64>,
    pub meta: SnapshotMeta<u64, BasicNode>,
    pub data: Vec<u8>,
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcError> {
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        _rpc: openraft::raft::InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<openraft::raft::InstallSnapshotResponse<u64>, RpcError<InstallSnapshotError>> {
        // Snapshots go whole, through `full_snapshot`.
        Err(RPCError::Network(NetworkError::new(&CallError(
            "chunked snapshots are not used".into(),
        ))))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcError> {
        self.rpc("/raft/vote", &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<u64>,
        snapshot: Snapshot<TypeConfig>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        let request = SnapshotRequest {
            vote,
            meta: snapshot.meta,
            data: *snapshot.snapshot,
        };
        let answer: Result<SnapshotResponse<u64>, Fatal<u64>> = self
            .http
            .call(&self.addr, "/raft/snapshot", &request, option.hard_ttl())
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        answer.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// What `/raft/write` answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum WriteAnswer {
    /// Applied, at this log index.
    Done(Reply, u64),
    /// This node is not the leader; try this one (if known).
    NotLeader(Option<String>),
    /// It failed.
    Failed(String),
}

/// What `/raft/status` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: u64,
    pub initialized: bool,
    pub leader: Option<u64>,
}

/// Serves one request on the Raft listener.
pub async fn serve(
    raft: Raft,
    id: u64,
    token: Option<Arc<str>>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    if let Some(token) = &token {
        let given = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Digests compared: no timing hint about the token's bytes.
        let matches = given.is_some_and(|given| {
            use sha2::{Digest, Sha256};
            Sha256::digest(given.as_bytes()) == Sha256::digest(token.as_bytes())
        });
        if !matches {
            return text(StatusCode::UNAUTHORIZED, "raft token required\n");
        }
    }
    let path = request.uri().path().to_owned();
    if path == "/raft/status" {
        let initialized = raft.is_initialized().await.unwrap_or(false);
        let leader = raft.metrics().borrow().current_leader;
        return json(&PeerStatus {
            id,
            initialized,
            leader,
        });
    }
    if request.method() != Method::POST {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    };
    match path.as_str() {
        "/raft/append" => match serde_json::from_slice(&body) {
            Ok(rpc) => json(&raft.append_entries(rpc).await),
            Err(e) => bad_json(e),
        },
        "/raft/vote" => match serde_json::from_slice(&body) {
            Ok(rpc) => json(&raft.vote(rpc).await),
            Err(e) => bad_json(e),
        },
        "/raft/snapshot" => match serde_json::from_slice::<SnapshotRequest>(&body) {
            Ok(request) => {
                let snapshot = Snapshot {
                    meta: request.meta,
                    snapshot: Box::new(request.data),
                };
                json(&raft.install_full_snapshot(request.vote, snapshot).await)
            }
            Err(e) => bad_json(e),
        },
        "/raft/write" => match serde_json::from_slice::<Proposal>(&body) {
            Ok(request) => json(&write_locally(&raft, request).await),
            Err(e) => bad_json(e),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Proposes `command` on this node (it must be the leader).
pub async fn write_locally(raft: &Raft, request: Proposal) -> WriteAnswer {
    use openraft::error::ClientWriteError;
    match raft.client_write(request).await {
        Ok(response) => WriteAnswer::Done(response.data, response.log_id.index),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            WriteAnswer::NotLeader(forward.leader_node.map(|node| node.addr))
        }
        Err(e) => WriteAnswer::Failed(e.to_string()),
    }
}

fn json<T: Serialize>(value: &T) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(ResponseBody::full(bytes));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn bad_json(error: serde_json::Error) -> Response<ResponseBody> {
    text(
        StatusCode::BAD_REQUEST,
        &format!("malformed raft message: {error}\n"),
    )
}

fn text(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(message.to_owned()));
    *response.status_mut() = status;
    response
}
