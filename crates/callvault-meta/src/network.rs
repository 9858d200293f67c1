//! openraft's `RaftNetwork` over tonic: one reused channel per peer, with connect and request
//! timeouts; snapshots go as openraft's bounded chunks.

use crate::member::{INCARNATION_HEADER, MetaMember};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callvault_proto::MAX_MESSAGE_BYTES;
use callvault_proto::auth::{AuthChannel, Bearer};
use callvault_proto::v1::raft_client::RaftClient;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::convert::{self, ConvertError};
use crate::types::{NodeId, TypeConfig};

/// How long to wait for a TCP connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Channels to peers by address, shared by every client the factory makes, so reconnecting
/// replication streams reuse connections. Every request carries this member's `meta` credential.
#[derive(Clone)]
pub struct ChannelPool {
    channels: Arc<Mutex<HashMap<String, AuthChannel>>>,
    peer: Bearer,
}

impl Default for ChannelPool {
    fn default() -> Self {
        ChannelPool::new(Bearer::none())
    }
}

impl ChannelPool {
    /// A pool whose requests carry `peer` (this member's credential).
    pub fn new(peer: Bearer) -> Self {
        ChannelPool {
            channels: Arc::default(),
            peer,
        }
    }

    /// The channel to `addr` (`host:port`), created lazily: it connects on first use and
    /// reconnects by itself after failures.
    pub fn channel(&self, addr: &str) -> Result<AuthChannel, tonic::transport::Error> {
        let mut channels = self.channels.lock().expect("lock is not poisoned");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = callvault_proto::tls::endpoint(addr)?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        let channel = self.peer.channel(channel);
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Makes a [`PeerClient`] per target.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    pool: ChannelPool,
}

impl NetworkFactory {
    /// A factory over a shared channel pool.
    pub fn new(pool: ChannelPool) -> Self {
        NetworkFactory { pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MetaMember) -> PeerClient {
        PeerClient {
            target,
            node: node.clone(),
            client: self.pool.channel(&node.addr).ok().map(|channel| {
                RaftClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            }),
        }
    }
}

/// The Raft RPCs to one peer.
pub struct PeerClient {
    target: NodeId,
    node: MetaMember,
    client: Option<RaftClient<AuthChannel>>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, MetaMember, RaftError<NodeId, E>>>;

fn network_error<E: std::error::Error>(
    error: impl std::fmt::Display,
) -> RPCError<NodeId, MetaMember, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(error.to_string())))
}

fn status_error<E: std::error::Error>(status: tonic::Status) -> RPCError<NodeId, MetaMember, E> {
    match status.code() {
        // Nothing listens there (yet): back off instead of retrying at once.
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(
            &std::io::Error::other(status.message().to_string()),
        )),
        _ => network_error(format!("{}: {}", status.code(), status.message())),
    }
}

fn decode_error<E: std::error::Error>(error: ConvertError) -> RPCError<NodeId, MetaMember, E> {
    network_error(format!("peer sent a malformed response: {error}"))
}

impl PeerClient {
    fn client<E: std::error::Error>(
        &self,
    ) -> Result<RaftClient<AuthChannel>, RPCError<NodeId, MetaMember, E>> {
        self.client
            .clone()
            .ok_or_else(|| network_error(format!("invalid peer address {:?}", self.node.addr)))
    }

    /// A request naming the incarnation of the target's volume that the membership knows, so
    /// a node that lost its volume refuses it (see [`crate::member`]).
    fn request<T>(&self, message: T, option: &RPCOption) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(option.hard_ttl());
        if self.node.incarnation != 0 {
            request.metadata_mut().insert(
                INCARNATION_HEADER,
                tonic::metadata::MetadataValue::from(self.node.incarnation),
            );
        }
        request
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let message = convert::append_entries_request_to_pb(&rpc);
        // Ask openraft to send fewer entries rather than exceed the peer's message bound.
        let size = prost::Message::encoded_len(&message);
        let limit = MAX_MESSAGE_BYTES - (64 << 10);
        if size > limit && message.entries.len() > 1 {
            let fitting = (message.entries.len() as u64 * limit as u64 / size as u64).max(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fitting),
            ));
        }
        let response = self
            .client()?
            .append_entries(self.request(message, &option))
            .await
            .map_err(status_error)?
            .into_inner();
        convert::append_entries_response_from_pb(&response).map_err(decode_error)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let message = convert::install_snapshot_request_to_pb(rpc);
        let response = self
            .client()?
            .install_snapshot(self.request(message, &option))
            .await
            .map_err(status_error)?
            .into_inner();
        match convert::install_snapshot_response_from_pb(&response).map_err(decode_error)? {
            Ok(response) => Ok(response),
            Err(mismatch) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)),
            ))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let message = convert::vote_request_to_pb(&rpc);
        let response = self
            .client()?
            .vote(self.request(message, &option))
            .await
            .map_err(status_error)?
            .into_inner();
        convert::vote_response_from_pb(&response).map_err(decode_error)
    }
}
