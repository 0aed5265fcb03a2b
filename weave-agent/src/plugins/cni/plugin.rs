//! The CNI operations, each one request to the local agent over its control socket.

use std::path::PathBuf;

use rscni_plugin::{
    cni::Cni,
    error::Error,
    types::{Args, CNIResult},
};

use super::config::{self, AGENT_REFUSED, CHECK_FAILED};
use crate::control::{
    api::{CniAttachment, Request, Response},
    client::{self, Unreachable},
    location::Location,
};

pub struct WeavePlugin;

/// The agent's socket: the one the configuration names, else that of this network
/// namespace's agent (the runtime runs the plugin in the host's namespace, where the agent
/// runs).
fn socket(named: Option<PathBuf>) -> Result<PathBuf, Error> {
    match named {
        Some(path) => Ok(path),
        None => Location::resolve(None)
            .map(|loc| loc.socket())
            .map_err(|e| Error::IOFailure(format!("finding the agent's socket: {e:#}"))),
    }
}

/// One request to the agent; its refusal becomes the plugin's error `code`.
fn call(socket: &std::path::Path, request: &Request, code: u32) -> Result<Response, Error> {
    match client::call(socket, request) {
        Ok(Response::Error { message }) => Err(Error::Custom(
            code,
            format!("weave-agent refused {}", request.name()),
            message,
        )),
        Ok(response) => Ok(response),
        Err(Unreachable::NoAgent) => Err(Error::TryAgainLater(format!(
            "no weave-agent listens on {}: start it with `weave-agent launch`",
            socket.display()
        ))),
        Err(Unreachable::Other(err)) => Err(Error::IOFailure(format!("{err:#}"))),
    }
}

fn unexpected(request: &Request) -> Error {
    Error::Custom(
        AGENT_REFUSED,
        format!(
            "weave-agent answered {} with something else",
            request.name()
        ),
        "the running agent is another version than this plugin: install the plugin again \
         with `weave-agent cni install` from the agent's binary"
            .to_owned(),
    )
}

/// The container id and interface every ADD, DEL and CHECK carries.
fn ids(args: &Args) -> Result<(String, String), Error> {
    let id = args
        .container_id()
        .ok_or_else(|| Error::missing_env(&["CNI_CONTAINERID"]))?;
    let iface = args
        .ifname()
        .ok_or_else(|| Error::missing_env(&["CNI_IFNAME"]))?;
    Ok((id.to_string(), iface.to_string()))
}

/// The container's namespace file, which ADD and CHECK carry.
fn netns(args: &Args) -> Result<PathBuf, Error> {
    args.netns()
        .cloned()
        .ok_or_else(|| Error::missing_env(&["CNI_NETNS"]))
}

fn socket_of(args: &Args) -> Result<PathBuf, Error> {
    socket(config::ask(args.config(), args.args())?.socket)
}

impl Cni for WeavePlugin {
    fn add(&self, args: Args) -> Result<CNIResult, Error> {
        let ask = config::ask(args.config(), args.args())?;
        let (container_id, iface) = ids(&args)?;
        let netns = netns(&args)?;
        let request = Request::CniAdd {
            container_id,
            netns: netns.clone(),
            iface: iface.clone(),
            addresses: ask.addresses,
            dns_name: ask.dns_name,
            mtu: ask.mtu,
        };
        match call(&socket(ask.socket)?, &request, AGENT_REFUSED)? {
            Response::CniAdded { endpoints, dns } => {
                config::result(&iface, &netns.to_string_lossy(), &endpoints, dns.as_ref())
            }
            _ => Err(unexpected(&request)),
        }
    }

    fn del(&self, args: Args) -> Result<(), Error> {
        let (container_id, iface) = ids(&args)?;
        let request = Request::CniDel {
            container_id,
            iface,
        };
        match call(&socket_of(&args)?, &request, AGENT_REFUSED)? {
            Response::Detached { .. } => Ok(()),
            _ => Err(unexpected(&request)),
        }
    }

    fn check(&self, args: Args) -> Result<(), Error> {
        let (container_id, iface) = ids(&args)?;
        let netns = netns(&args)?;
        let request = Request::CniCheck {
            container_id,
            netns,
            iface,
        };
        match call(&socket_of(&args)?, &request, CHECK_FAILED)? {
            Response::CniChecked => Ok(()),
            _ => Err(unexpected(&request)),
        }
    }

    fn status(&self, args: Args) -> Result<(), Error> {
        let socket = socket_of(&args)?;
        match call(&socket, &Request::Ps, AGENT_REFUSED) {
            Ok(_) => Ok(()),
            Err(Error::TryAgainLater(why)) => Err(Error::PluginNotAvailable(why)),
            Err(err) => Err(err),
        }
    }

    fn gc(&self, args: Args) -> Result<(), Error> {
        let keep = args
            .config()
            .valid_attachments
            .iter()
            .flatten()
            .map(|a| CniAttachment {
                container_id: a.container_id.clone(),
                iface: a.ifname.clone(),
            })
            .collect();
        let request = Request::CniGc { keep };
        match call(&socket_of(&args)?, &request, AGENT_REFUSED)? {
            Response::Detached { .. } => Ok(()),
            _ => Err(unexpected(&request)),
        }
    }
}
