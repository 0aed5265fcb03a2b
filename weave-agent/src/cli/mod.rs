//! The command line: what users type (`args`), what each command sends and prints
//! (`commands`, `status`), and the daemon's life cycle seen from outside (`launch`).

pub mod args;
mod commands;
mod launch;
mod status;

use anyhow::Result;

pub use args::Cli;
use args::Command;

use crate::{
    control::{api::Request, daemon, location::Location},
    datapath::bpffs,
    mesh::bench_peer,
};

pub fn run(cli: Cli) -> Result<()> {
    let loc = Location::resolve(cli.state_dir.clone())?;
    let global = launch::cli_state_dir_args(&cli);
    match cli.command {
        Command::Launch(args) if args.foreground => {
            daemon::run(&launch::daemon_config(&args)?, &loc)
        }
        Command::Launch(args) => launch::launch(&global, &args, &loc),
        Command::Status(args) => status::status(&loc, args),
        Command::Stop => {
            let pid = launch::stop(&loc)?;
            println!("weave-agent (pid {pid}) stopped; the data path stays attached");
            Ok(())
        }
        Command::Reset => {
            // Pins live in the host's mount namespace; enter it while still single-threaded.
            bpffs::enter_host_mount_namespace()?;
            launch::reset(&loc)
        }
        Command::Join { addr, mut launch } => commands::join(&global, &addr, &mut launch, &loc),
        Command::Connect { replace, peers } => {
            commands::configure_peers(&loc, &Request::Connect { peers, replace })
        }
        Command::Forget { peers } => commands::configure_peers(&loc, &Request::Forget { peers }),
        Command::Run {
            args,
            mtu,
            no_multicast_route,
        } => commands::run_container(&loc, &args, mtu, no_multicast_route),
        Command::Attach {
            args,
            mtu,
            dns_name,
            resolv_conf,
            no_multicast_route,
        } => {
            let (container, addresses) = args.split_last().expect("clap takes at least one");
            let dns = commands::AttachOptions {
                dns_name,
                resolv_conf,
                no_multicast_route,
            };
            commands::attach(&loc, addresses, container, mtu, &dns)
        }
        Command::Detach { args } => {
            let (container, address) = match args.as_slice() {
                [address, container] => (container.as_str(), Some(address.as_str())),
                [container] => (container.as_str(), None),
                _ => unreachable!("clap takes one or two"),
            };
            commands::detach(&loc, container, address)
        }
        Command::Ps(out) => commands::ps(&loc, out),
        Command::BenchPeer {
            address,
            seed,
            endpoints,
        } => bench_peer::bench_peer(address, &seed, endpoints),
        Command::Peers(out) => commands::peers(&loc, out),
        Command::Policy(command) => commands::policy(&loc, command),
        Command::Expose {
            cidr,
            routes,
            masquerade,
            out,
        } => commands::expose(&loc, cidr.as_deref(), routes, masquerade, out),
        Command::Hide { cidr, out } => commands::hide(&loc, cidr, out),
        Command::Rmpeer { peer } => commands::rmpeer(&loc, peer),
        Command::Ipam(out) => commands::ipam(&loc, out),
        Command::Cni(command) => commands::cni(command),
        Command::Dns(out) => commands::dns(&loc, &Request::Dns, out),
        Command::DnsAdd(args) => commands::dns(
            &loc,
            &Request::DnsChange {
                ips: args.ips,
                name: args.name,
                add: true,
            },
            args.out,
        ),
        Command::DnsRemove(args) => commands::dns(
            &loc,
            &Request::DnsChange {
                ips: args.ips,
                name: args.name,
                add: false,
            },
            args.out,
        ),
    }
}
