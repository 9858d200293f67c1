//! The keys role: the only holder of the jurisdictions' private keys.
//!
//! It releases one call's data key for one access the state machine decided "allowed" and
//! logged, once, sealed to the one-time public key the api node that asked put in the access
//! record. Before it proposes the release it checks the principal's signed request itself (the
//! signature against the principals file it holds, that the request names the grant's call, and
//! that it is recent), so a metadata node that lied about an access would still not get a key.
//! Every release and every refusal is an audit entry (`key.released`, `key.release.denied`).

use std::sync::Arc;
use std::time::Duration;

use callvault_blob::{KeyCustodian, WrappedDataKey, seal_release};
use callvault_core::UnixMillis;
use callvault_meta::client::MetaClient;
use callvault_meta::custody::{AccessGrant, KeyRelease, RELEASE_WINDOW_MS};
use callvault_meta::intents::rpc;
use callvault_meta::principal::Principals;
use callvault_meta::{Command, CommandResult};
use callvault_proto::auth::AuthChannel;
use callvault_proto::identity::Credential;
use callvault_proto::v1 as pb;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::ingest::now;

/// Serves `Keys.Release`.
#[derive(Clone)]
pub struct KeysService {
    meta: MetaClient,
    custodian: Arc<dyn KeyCustodian>,
    principals: Principals,
    node: String,
}

impl KeysService {
    /// Releases keys held by `custodian` for accesses logged in `meta`, checking signed requests
    /// against `principals`; `node` names this keys node in the audit log.
    pub fn new(
        meta: MetaClient,
        custodian: Arc<dyn KeyCustodian>,
        principals: Principals,
        node: String,
    ) -> Self {
        KeysService {
            meta,
            custodian,
            principals,
            node,
        }
    }

    /// The gRPC server.
    pub fn server(self) -> pb::keys_server::KeysServer<Self> {
        pb::keys_server::KeysServer::new(self)
    }

    /// Why the grant's signed request does not hold, if it does not: the keys role's own check,
    /// independent of the metadata store's.
    fn withheld(&self, grant: &AccessGrant, now: UnixMillis) -> Option<String> {
        let proof = &grant.proof;
        let who = match proof.verify(&self.principals) {
            Ok(who) => who,
            Err(status) => return Some(status.message().to_string()),
        };
        if who.name != grant.principal || proof.rpc != rpc::PLAYBACK {
            return Some(format!(
                "the signed request is not {}'s playback",
                grant.principal
            ));
        }
        let Ok(request) = pb::PlaybackRequest::decode(proof.request.as_slice()) else {
            return Some("the signed request does not decode".into());
        };
        if request.jurisdiction != grant.jurisdiction.code()
            || request.call_id != grant.call_id.as_str()
        {
            return Some("the signed request names another call".into());
        }
        if (now.0 - proof.time.0).abs() > RELEASE_WINDOW_MS {
            return Some("the signed request is older than the release window".into());
        }
        None
    }
}

#[tonic::async_trait]
impl pb::keys_server::Keys for KeysService {
    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let access = request.into_inner().access_record;
        let at = now();
        let grant = self.meta.access_grant(access).await?;
        let withheld = grant.as_ref().and_then(|g| self.withheld(g, at));
        let release = Command::ReleaseKey(KeyRelease {
            access,
            keys_node: self.node.clone(),
            withheld,
            at,
        });
        match self.meta.propose(&release).await?.1 {
            CommandResult::KeyRelease { refused: None } => {}
            CommandResult::KeyRelease {
                refused: Some(reason),
            } => {
                return Err(Status::permission_denied(format!(
                    "no key for access {access}: {reason}"
                )));
            }
            other => {
                return Err(Status::internal(format!(
                    "unexpected result from the metadata store: {other:?}"
                )));
            }
        }
        let grant = grant.ok_or_else(|| Status::internal("a release without a grant"))?;
        let wrapped = self.meta.released_key(access).await?.ok_or_else(|| {
            Status::failed_precondition("the call's key is gone since the release")
        })?;
        let wrapped = WrappedDataKey::from_bytes(&wrapped)
            .map_err(|e| Status::internal(format!("stored data key: {e}")))?;
        let key = self
            .custodian
            .unwrap(&grant.call_id, grant.jurisdiction, &wrapped)
            .map_err(|e| {
                Status::failed_precondition(format!(
                    "this keys node cannot open {}'s recordings: {e}",
                    grant.jurisdiction.code()
                ))
            })?;
        let released_key = seal_release(
            &grant.recipient,
            access,
            grant.jurisdiction,
            &grant.call_id,
            &key,
        )
        .map_err(|e| Status::internal(format!("sealing the release: {e}")))?;
        Ok(Response::new(pb::ReleaseResponse { released_key }))
    }
}

/// The api's client of the keys role: any keys node; `UNAVAILABLE` moves on to the next.
#[derive(Clone)]
pub struct KeysClient {
    members: Arc<Vec<pb::keys_client::KeysClient<AuthChannel>>>,
}

impl KeysClient {
    /// A client of the keys nodes at `addrs`, acting as `peer` (the api role).
    pub fn new(addrs: &[String], peer: &Credential) -> anyhow::Result<Self> {
        anyhow::ensure!(!addrs.is_empty(), "no keys-role address configured");
        let members = addrs
            .iter()
            .map(|addr| {
                let endpoint = callvault_proto::tls::endpoint(addr)
                    .map_err(|e| anyhow::anyhow!("keys address {addr:?}: {e}"))?
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(30))
                    .tcp_nodelay(true);
                Ok(pb::keys_client::KeysClient::new(
                    peer.bearer().channel(endpoint.connect_lazy()),
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(KeysClient {
            members: Arc::new(members),
        })
    }

    /// The key released for `access`, sealed to the access record's one-time key.
    pub async fn release(&self, access: u64) -> Result<Vec<u8>, Status> {
        let mut last = Status::unavailable("no keys node answered");
        for member in self.members.iter() {
            match member
                .clone()
                .release(pb::ReleaseRequest {
                    access_record: access,
                })
                .await
            {
                Ok(response) => return Ok(response.into_inner().released_key),
                Err(status) if status.code() == tonic::Code::Unavailable => last = status,
                Err(status) => return Err(status),
            }
        }
        Err(last)
    }
}
