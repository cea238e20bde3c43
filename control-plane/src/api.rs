//! The controller's gRPC services: `Controller` for clients and
//! `NodeRegistry` for agents. Each client method first resolves the caller
//! from its token (`auth`), checks it may act for the tenant it names, then
//! calls [`Controller`]; the behaviour lives there.

use std::sync::Arc;

use ephemera_domain::stages::Stages;
use ephemera_domain::Reason;
use ephemera_proto::v1 as pb;
use ephemera_proto::v1::controller_server::Controller as ControllerService;
use ephemera_proto::v1::node_registry_server::NodeRegistry;
use ephemera_trust::{Peer, PeerVerifier};
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, Principal};
use crate::controller::{ApiError, Controller};
use crate::raft::WriteError;

/// Both services share one [`Controller`].
#[derive(Debug, Clone)]
pub struct Api {
    controller: Arc<Controller>,
    /// Clients: bearer tokens.
    auth: Authenticator,
    /// Agents: their node certificates.
    members: PeerVerifier,
}

impl Api {
    /// Serves `controller`, authenticating clients with `auth` and agents
    /// with `members`.
    pub fn new(controller: Arc<Controller>, auth: Authenticator, members: PeerVerifier) -> Self {
        Api {
            controller,
            auth,
            members,
        }
    }

    fn membership_reply(
        &self,
        r: Result<(Vec<u64>, Vec<u64>), WriteError>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        match r {
            Ok((voters, learners)) => Ok(Response::new(pb::MembershipReply {
                voters,
                learners,
                leader_id: self.controller.node.leader().map(|(id, _)| id).unwrap_or(0),
            })),
            Err(WriteError::Forward { addr, .. }) => Err(Reason::NotLeader {
                leader: Some(addr.clone()),
            }
            .status(format!("not the leader; the leader is at {addr}"))),
            Err(e) => Err(Reason::Unavailable.status(e.to_string())),
        }
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        self.auth
            .principal(req.metadata(), &self.controller.node.read_state())
    }
}

#[tonic::async_trait]
impl ControllerService for Api {
    async fn issue_token(
        &self,
        req: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenReply>, Status> {
        self.caller(&req)?.check_admin("issuing a tenant token")?;
        let tenant = req.into_inner().tenant;
        let token = self.controller.issue_token(&tenant).await?;
        Ok(Response::new(pb::IssueTokenReply { tenant, token }))
    }

    async fn set_quota(
        &self,
        req: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::SetQuotaReply>, Status> {
        self.caller(&req)?.check_admin("setting a tenant's quota")?;
        let req = req.into_inner();
        let quota = ephemera_storage::Quota {
            memory_bytes: req.memory_bytes,
            invocations: req.invocations,
        };
        self.controller.set_quota(&req.tenant, quota).await?;
        Ok(Response::new(pb::SetQuotaReply {}))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        self.caller(&req)?.check_admin("changing the controllers")?;
        let req = req.into_inner();
        if req.id == 0 || req.addr.is_empty() {
            return Err(ApiError::InvalidArgument(
                "add member: need a non-zero id and an address".into(),
            )
            .into());
        }
        let r = self.controller.node.add_member(req.id, &req.addr).await;
        self.membership_reply(r)
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        self.caller(&req)?.check_admin("changing the controllers")?;
        let r = self
            .controller
            .node
            .remove_member(req.into_inner().id)
            .await;
        self.membership_reply(r)
    }

    async fn place(
        &self,
        req: Request<pb::PlaceRequest>,
    ) -> Result<Response<pb::PlaceReply>, Status> {
        let who = self.caller(&req)?;
        let req = req.into_inner();
        who.check_tenant(&req.tenant)?;
        if req.invocation_id.is_empty() {
            return Err(
                ApiError::InvalidArgument("place: the invocation id is empty".into()).into(),
            );
        }
        let function = self.controller.function(&req.tenant, &req.name).await?;
        let (node_id, addr) = self.controller.place(&function, &req.invocation_id).await?;
        Ok(Response::new(pb::PlaceReply { node_id, addr }))
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        let who = self.caller(&req)?;
        let id = req.into_inner().invocation_id;
        if let Principal::Tenant(t) = &who {
            // A tenant may release only its own active placements.
            let owner = self
                .controller
                .node
                .read_state()
                .tasks
                .get(&id)
                .map(|task| task.tenant.clone());
            match owner {
                Some(owner) => who.check_tenant(&owner)?,
                None => {
                    return Err(ApiError::NotFound(format!(
                        "tenant {t} has no active invocation {id}"
                    ))
                    .into())
                }
            }
        }
        self.controller.release(&id).await?;
        Ok(Response::new(pb::ReleaseReply {}))
    }

    async fn dump(&self, req: Request<pb::DumpRequest>) -> Result<Response<pb::DumpReply>, Status> {
        self.caller(&req)?
            .check_admin("dumping the cluster state")?;
        Ok(Response::new(self.controller.dump()?))
    }

    async fn deploy_function(
        &self,
        req: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployReply>, Status> {
        let who = self.caller(&req)?;
        let req = req.into_inner();
        let spec = req.spec.ok_or_else(|| {
            ApiError::InvalidArgument("deploy request without a function spec".into())
        })?;
        who.check_tenant(&spec.tenant)?;
        Ok(Response::new(self.controller.deploy(spec, req.code).await?))
    }

    async fn get_function(
        &self,
        req: Request<pb::GetFunctionRequest>,
    ) -> Result<Response<pb::FunctionInfo>, Status> {
        let who = self.caller(&req)?;
        let req = req.into_inner();
        who.check_tenant(&req.tenant)?;
        self.controller.settle().await;
        let record = self.controller.function(&req.tenant, &req.name).await?;
        Ok(Response::new(pb::FunctionInfo {
            spec: Some(crate::convert::spec_of(&record)),
        }))
    }

    async fn list_functions(
        &self,
        req: Request<pb::ListFunctionsRequest>,
    ) -> Result<Response<pb::ListFunctionsReply>, Status> {
        let tenant = self.caller(&req)?.scope(&req.get_ref().tenant)?;
        self.controller.settle().await;
        let functions = self.controller.functions(&tenant);
        Ok(Response::new(pb::ListFunctionsReply { functions }))
    }

    async fn invoke(
        &self,
        req: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeReply>, Status> {
        let start = std::time::Instant::now();
        let timed = Stages::wanted(req.metadata());
        let who = self.caller(&req)?;
        let span = self.controller.invoke_span(req.get_ref(), req.metadata());
        let req = req.into_inner();
        who.check_tenant(&req.tenant)?;
        let mut stages = Stages::new();
        let t = stages.lap("auth", start);
        // Its own task: a caller that goes away (cancels, times out,
        // disconnects) does not cut the invocation short between its
        // placement and its release; the reservation always comes back.
        let controller = self.controller.clone();
        let invocation = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut stages = Stages::new();
                stages.lap("spawn", t);
                let reply = controller.invoke_timed(req, &mut stages).await;
                reply.map(|r| (r, stages))
            },
            span,
        ));
        let (reply, inner) = invocation
            .await
            .map_err(|e| Status::internal(format!("the invocation task failed: {e}")))??;
        let mut response = Response::new(reply);
        if timed {
            stages.nest("", &inner);
            stages.lap("controller", start);
            stages.put(response.metadata_mut());
        }
        Ok(response)
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let tenant = self.caller(&req)?.scope(&req.get_ref().tenant)?;
        // A tenant sees the nodes' aggregates, and only its own functions
        // and instances; its own finished invocations are released first.
        self.controller.settle().await;
        Ok(Response::new(self.controller.status(&tenant).await))
    }
}

#[tonic::async_trait]
impl NodeRegistry for Api {
    async fn register_node(
        &self,
        req: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeReply>, Status> {
        // Only the agent holding this node's certificate may register it.
        self.members.require_agent(&req, &req.get_ref().node_id)?;
        let req = req.into_inner();
        self.controller
            .register_node(req.node_id, req.addr, req.memory_bytes, req.resumed)
            .await?;
        Ok(Response::new(pb::RegisterNodeReply {}))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        // An agent heartbeats for its own node; a follower forwards a
        // heartbeat to the leader with its controller certificate.
        let node_id = &req.get_ref().node_id;
        if !matches!(self.members.peer(&req)?, Some(Peer::Controller(_))) {
            self.members.require_agent(&req, node_id)?;
        }
        let req = req.into_inner();
        let known = self.controller.heartbeat(&req.node_id, req.running).await?;
        Ok(Response::new(pb::HeartbeatReply { known }))
    }
}
