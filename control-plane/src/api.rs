//! The controller's gRPC services: `Controller` for clients and
//! `NodeRegistry` for agents. Each method decodes its request, calls
//! [`Controller`] and encodes the answer; the behaviour lives there.

use std::sync::Arc;

use ephemera_proto::v1 as pb;
use ephemera_proto::v1::controller_server::Controller as ControllerService;
use ephemera_proto::v1::node_registry_server::NodeRegistry;
use tonic::{Request, Response, Status};

use crate::controller::{ApiError, Controller};

/// Both services share one [`Controller`].
#[derive(Debug, Clone)]
pub struct Api {
    controller: Arc<Controller>,
}

impl Api {
    /// Serves `controller`.
    pub fn new(controller: Arc<Controller>) -> Self {
        Api { controller }
    }
}

#[tonic::async_trait]
impl ControllerService for Api {
    async fn place(
        &self,
        req: Request<pb::PlaceRequest>,
    ) -> Result<Response<pb::PlaceReply>, Status> {
        let req = req.into_inner();
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
        self.controller
            .release(&req.into_inner().invocation_id)
            .await?;
        Ok(Response::new(pb::ReleaseReply {}))
    }

    async fn dump(
        &self,
        _req: Request<pb::DumpRequest>,
    ) -> Result<Response<pb::DumpReply>, Status> {
        Ok(Response::new(self.controller.dump()?))
    }

    async fn deploy_function(
        &self,
        req: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployReply>, Status> {
        let req = req.into_inner();
        let spec = req.spec.ok_or_else(|| {
            ApiError::InvalidArgument("deploy request without a function spec".into())
        })?;
        Ok(Response::new(self.controller.deploy(spec, req.code).await?))
    }

    async fn get_function(
        &self,
        req: Request<pb::GetFunctionRequest>,
    ) -> Result<Response<pb::FunctionInfo>, Status> {
        let req = req.into_inner();
        let record = self.controller.function(&req.tenant, &req.name).await?;
        Ok(Response::new(pb::FunctionInfo {
            spec: Some(crate::convert::spec_of(&record)),
        }))
    }

    async fn list_functions(
        &self,
        req: Request<pb::ListFunctionsRequest>,
    ) -> Result<Response<pb::ListFunctionsReply>, Status> {
        let functions = self.controller.functions(&req.into_inner().tenant);
        Ok(Response::new(pb::ListFunctionsReply { functions }))
    }

    async fn invoke(
        &self,
        req: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeReply>, Status> {
        let reply = self.controller.invoke(req.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        Ok(Response::new(
            self.controller.status(&req.into_inner().tenant).await,
        ))
    }
}

#[tonic::async_trait]
impl NodeRegistry for Api {
    async fn register_node(
        &self,
        req: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeReply>, Status> {
        let req = req.into_inner();
        self.controller
            .register_node(req.node_id, req.addr, req.memory_bytes)
            .await?;
        Ok(Response::new(pb::RegisterNodeReply {}))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let known = self.controller.heartbeat(&req.into_inner().node_id)?;
        Ok(Response::new(pb::HeartbeatReply { known }))
    }
}
