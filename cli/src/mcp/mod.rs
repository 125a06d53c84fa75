//! The MCP server of `ui mcp`: the cluster's tools and `univrs://` resources for an AI agent,
//! over stdio or Streamable HTTP (rmcp, the official Rust SDK).
//!
//! It talks to the apiserver as the key of the configuration directory it runs in (an
//! agent's, from `ui agent init`), through the same client as every `ui` command: what the
//! agent may do is what the apiserver lets that key do (its user's AgentGrant), never a rule of
//! this layer. Writes it signs are signed as `ui` signs them (`Context::sign`: on the user's
//! behalf in an agent's directory).
//!
//! - [`tools`]: the tools (explain, get, list, diff, apply, delete, scale, logs, status,
//!   approval, balance, reputation), each a thin shell over the same code as its command;
//! - [`resources`]: `univrs://{plural}[/{namespace}]/{name}` resources, read and followed
//!   through the apiserver's watch;
//! - [`explain`]: field documentation from the kinds' JSON Schemas;
//! - [`bounded`]: outputs cut to what fits an agent's context, saying how to get the rest;
//! - [`http`]: the Streamable HTTP listener, its bearer token and its Host/Origin checks.

mod bounded;
mod explain;
pub mod http;
mod resources;
mod tools;

pub use tools::FIELD_MANAGER;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, ResourceContents, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, tool_handler};
use tokio_util::sync::CancellationToken;

use crate::commands::Context;
use crate::connection::{Client, ClusterArgs};

/// Most subscriptions one client may hold at once (each is an apiserver watch).
pub const MAX_SUBSCRIPTIONS: usize = 32;
/// Most tool calls and resource reads running at once (each holds a blocking thread and a
/// request to the apiserver); more wait their turn.
pub const MAX_CONCURRENT_CALLS: usize = 8;

/// What every session of the server shares: the configuration directory, the clients.
pub struct State {
    /// The configuration directory the server runs in (an agent's).
    pub ctx: Context,
    /// The blocking client (the same as every `ui` command's), used from blocking tasks.
    pub client: Arc<Client>,
    /// The async client, for watches.
    pub kube: kube::Client,
    /// Bounds the calls running at once ([`MAX_CONCURRENT_CALLS`]).
    pub calls: tokio::sync::Semaphore,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("ctx", &self.ctx).field("client", &self.client).finish_non_exhaustive()
    }
}

impl State {
    /// The state of a server on the cluster `cluster` names. Call it inside a tokio runtime
    /// (for the async client); `client` is the blocking one, made outside it.
    pub fn new(ctx: Context, cluster: &ClusterArgs, client: Arc<Client>) -> anyhow::Result<Self> {
        let kube = crate::connection::connect_async(&ctx, cluster)?;
        Ok(Self { ctx, client, kube, calls: tokio::sync::Semaphore::new(MAX_CONCURRENT_CALLS) })
    }
}

/// One MCP session's handler: the tools, the resources, the session's subscriptions.
#[derive(Clone, Debug)]
pub struct UiServer {
    state: Arc<State>,
    tool_router: ToolRouter<Self>,
    /// `resources/subscribe` (protocol versions before 2026-07-28): each subscribed URI's
    /// watch, stopped by `resources/unsubscribe` or when the session ends.
    subscriptions: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// Cancelled when the session's handler is dropped: ends its legacy subscriptions.
    ended: Arc<DropCancel>,
}

/// Cancels its token when dropped.
#[derive(Debug, Default)]
struct DropCancel(CancellationToken);

impl Drop for DropCancel {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl UiServer {
    /// A handler for one session.
    pub fn new(state: Arc<State>) -> Self {
        Self {
            state,
            tool_router: Self::tool_router(),
            subscriptions: Default::default(),
            ended: Default::default(),
        }
    }
}

/// What `ui mcp` tells the agent about itself when it connects.
const INSTRUCTIONS: &str = "univrs: a Kubernetes-compatible control plane where every user is an Ed25519 key. \
You act with your own key, under the AgentGrant your user signed: the apiserver decides each request \
(allowed, held for approval, or refused with the rule that refused it). Start with `explain` to see the \
kinds, `list`/`get` to read, `diff` then `apply` (a server dry run always comes first) to write. A write \
held for approval names an Approval: follow it with the `approval` tool. Resources: univrs://{plural}, \
univrs://{plural}/{namespace}/{name}, univrs://{plural}/{name} (cluster-scoped kinds); subscribe to follow changes.";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for UiServer {
    /// Checks the arguments against the tool's input schema first, so that a malformed call
    /// is told which argument is wrong and how (rmcp's own check names no field), and an
    /// unknown tool is told the tools there are.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let Some(tool) = self.tool_router.get(&request.name) else {
            let names: Vec<String> =
                self.tool_router.list_all().into_iter().map(|t| t.name.to_string()).collect();
            return Err(McpError::invalid_params(
                format!("no tool named {:?}: the tools are {}", request.name, names.join(", ")),
                None,
            ));
        };
        let arguments = serde_json::Value::Object(request.arguments.clone().unwrap_or_default());
        if let Some(problems) = tools::argument_problems(&request.name, &tool.input_schema, &arguments) {
            return Ok(CallToolResult::error(vec![ContentBlock::text(problems)]).into());
        }
        let call = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        self.tool_router.call(call).await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_resources_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("ui-mcp", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(resources::collections()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(resources::templates()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = resources::Uri::parse(&request.uri)
            .map_err(|e| McpError::invalid_params(e, Some(serde_json::json!({ "uri": request.uri }))))?;
        let state = self.state.clone();
        let read = uri.clone();
        let _turn =
            self.state.calls.acquire().await.map_err(|_| McpError::internal_error("shutting down", None))?;
        let text = tokio::task::spawn_blocking(move || resources::read(&state.client, &read))
            .await
            .map_err(|e| McpError::internal_error(format!("the read stopped: {e}"), None))?;
        match text {
            Ok(text) => Ok(ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
                uri: request.uri,
                mime_type: Some(uri.mime_type().into()),
                text,
                meta: None,
            }])
            .into()),
            Err(resources::ReadError::NotFound(message)) => {
                Err(McpError::resource_not_found(message, Some(serde_json::json!({ "uri": request.uri }))))
            }
            Err(resources::ReadError::Other(message)) => Err(McpError::internal_error(message, None)),
        }
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let uri = resources::Uri::parse(&request.uri).map_err(|e| McpError::invalid_params(e, None))?;
        let stop = {
            let mut subs =
                self.subscriptions.lock().map_err(|_| McpError::internal_error("poisoned", None))?;
            if subs.contains_key(&request.uri) {
                return Ok(());
            }
            if subs.len() >= MAX_SUBSCRIPTIONS {
                return Err(McpError::invalid_request(
                    format!("at most {MAX_SUBSCRIPTIONS} subscriptions at once: unsubscribe from one first"),
                    None,
                ));
            }
            let stop = self.ended.0.child_token();
            subs.insert(request.uri.clone(), stop.clone());
            stop
        };
        let peer = context.peer.clone();
        let kube = self.state.kube.clone();
        let name = request.uri.clone();
        tokio::spawn(async move {
            resources::follow(kube, uri, stop, |change| {
                let peer = peer.clone();
                let name = name.clone();
                async move {
                    let sent = match change {
                        resources::Change::Updated => {
                            peer.notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(
                                name,
                            ))
                            .await
                        }
                        resources::Change::ListChanged => peer.notify_resource_list_changed().await,
                    };
                    sent.is_ok()
                }
            })
            .await
        });
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Ok(mut subs) = self.subscriptions.lock()
            && let Some(stop) = subs.remove(&request.uri)
        {
            stop.cancel();
        }
        Ok(())
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.resources_list_changed = requested.resources_list_changed;
        accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|u| resources::Uri::parse(u).is_ok())
                .take(MAX_SUBSCRIPTIONS)
                .cloned()
                .collect()
        });
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        // One watch per accepted URI, until the client cancels the listen request.
        let stop = context.request_context().ct.child_token();
        let sink = context.sink().clone();
        let list_changed = context.accepted().resources_list_changed == Some(true);
        let uris = context.accepted().resource_subscriptions.clone().unwrap_or_default();
        let mut tasks = tokio::task::JoinSet::new();
        for name in uris {
            let Ok(uri) = resources::Uri::parse(&name) else { continue };
            let (kube, stop, sink) = (self.state.kube.clone(), stop.clone(), sink.clone());
            tasks.spawn(async move {
                resources::follow(kube, uri, stop, |change| {
                    let (sink, name) = (sink.clone(), name.clone());
                    async move {
                        match change {
                            resources::Change::Updated => sink.notify_resource_updated(name).await.is_ok(),
                            resources::Change::ListChanged if list_changed => {
                                sink.notify_resource_list_changed().await.is_ok()
                            }
                            resources::Change::ListChanged => true,
                        }
                    }
                })
                .await
            });
        }
        context.cancelled().await;
        stop.cancel();
        tasks.abort_all();
        Ok(())
    }
}

/// Serves one session over stdin and stdout until the client closes them.
pub async fn serve_stdio(state: Arc<State>) -> anyhow::Result<()> {
    use rmcp::ServiceExt as _;
    let running = UiServer::new(state)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("the MCP session did not start: {e}"))?;
    running.waiting().await.map_err(|e| anyhow::anyhow!("the MCP session ended badly: {e}"))?;
    Ok(())
}
