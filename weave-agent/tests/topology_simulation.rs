//! 500 peers, the routing and topology code without sockets: each simulated agent hears its
//! neighbours' hellos, publishes whom it hears with the real codec, learns the others' links
//! through a model of gossip rounds, and computes its routes with the real shortest-path code.
//! A link change must bring every agent's routes to what the true graph gives within 5 s of
//! simulated time, and one agent's view of a full mesh of 500 must stay under 10 MB.
//!
//! The mesh: 20 sites of 25 peers, each site fully meshed inside; only 2 gateways per site
//! reach other sites (all 40 gateways reach each other), so every cross-site frame is
//! relayed, through one gateway or two.
//!
//! The gossip model: every 200 ms each agent exchanges state (push-pull, newer version wins)
//! with 3 peers chosen at random among all (chitchat's choice, which knows nothing of links:
//! a pick across a cut fails) and, every hello interval, with one peer it hears (the link
//! loop's own round, which keeps a sparse mesh converging; an agent makes it while some live
//! peer is not heard, which in this mesh is every agent).
//!
//! Memory is counted by the allocator of this test binary, so the one test here runs alone.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicIsize, Ordering},
    },
    time::Duration,
};

use weave_common::endpoint::Heard;

use weave_agent::mesh::topology::{
    links::{self, HEARD_WINDOW, HELLO_INTERVAL},
    routes::{Path, Route, Topology},
};

/// Counts the bytes allocated and not yet freed.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SITES: usize = 20;
const PER_SITE: usize = 25;
const PEERS: usize = SITES * PER_SITE;
const GATEWAYS_PER_SITE: usize = 2;
/// Simulated time advances in these steps.
const STEP_MS: u64 = 50;
const GOSSIP_MS: u64 = 200;
const GOSSIP_FANOUT: usize = 3;

/// splitmix64: a deterministic random source, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250) as u8 + 1)
}

fn is_gateway(i: usize) -> bool {
    i % PER_SITE < GATEWAYS_PER_SITE
}

/// Which pairs reach each other directly, the truth the agents learn.
struct Links {
    up: Vec<BTreeSet<usize>>,
}

impl Links {
    fn sites() -> Self {
        let mut up = vec![BTreeSet::new(); PEERS];
        for a in 0..PEERS {
            for b in a + 1..PEERS {
                let same_site = a / PER_SITE == b / PER_SITE;
                if same_site || (is_gateway(a) && is_gateway(b)) {
                    up[a].insert(b);
                    up[b].insert(a);
                }
            }
        }
        Self { up }
    }

    fn set(&mut self, a: usize, b: usize, up: bool) {
        if up {
            self.up[a].insert(b);
            self.up[b].insert(a);
        } else {
            self.up[a].remove(&b);
            self.up[b].remove(&a);
        }
    }
}

/// One simulated agent.
struct Agent {
    me: Ipv4Addr,
    /// When each neighbour's last hello arrived (ms).
    last_hello: BTreeMap<usize, u64>,
    heard: BTreeMap<Ipv4Addr, u16>,
    /// What it knows each peer publishes: (version, value), its own included.
    known: Vec<(u64, Arc<str>)>,
    /// The version of each peer's value its topology has taken in (as the agent's sync
    /// hands over only what changed, by comparing values; the model compares versions).
    applied: Vec<u64>,
    topology: Topology,
    routes: BTreeMap<Ipv4Addr, Path>,
    /// Its view changed since routes were last computed.
    stale: bool,
    /// Phase of its timers, so agents do not tick in lockstep.
    phase: u64,
}

struct Sim {
    now: u64,
    links: Links,
    agents: Vec<Agent>,
    live: BTreeSet<Ipv4Addr>,
    rng: Rng,
}

impl Sim {
    fn new() -> Self {
        let mut rng = Rng(6784);
        let empty: Arc<str> = Arc::from(links::encode(&BTreeMap::new()));
        let agents = (0..PEERS)
            .map(|i| Agent {
                me: addr(i),
                last_hello: BTreeMap::new(),
                heard: BTreeMap::new(),
                known: vec![(0, Arc::clone(&empty)); PEERS],
                applied: vec![u64::MAX; PEERS],
                topology: Topology::default(),
                routes: BTreeMap::new(),
                stale: true,
                phase: rng.next() % GOSSIP_MS,
            })
            .collect();
        Self {
            now: 0,
            links: Links::sites(),
            agents,
            live: (0..PEERS).map(addr).collect(),
            rng,
        }
    }

    fn due(&self, i: usize, every: u64) -> bool {
        (self.now + self.agents[i].phase) % every < STEP_MS
    }

    fn step(&mut self) {
        self.now += STEP_MS;
        let hello_ms = HELLO_INTERVAL.as_millis() as u64;
        // Hellos cross the links that are up.
        for i in 0..PEERS {
            if self.due(i, hello_ms) {
                for &n in &self.links.up[i] {
                    self.agents[n].last_hello.insert(i, self.now);
                }
            }
        }
        // Each agent reads whom it hears on its own tick and publishes a change.
        for i in 0..PEERS {
            if !self.due(i, hello_ms) {
                continue;
            }
            let now_ns = self.now * 1_000_000;
            // Every hello heard at full size: this model is about links, not MTUs.
            let entries = self.agents[i].last_hello.iter().map(|(n, at)| {
                let at = at * 1_000_000;
                let heard = Heard {
                    at_ns: at,
                    largest_at_ns: at,
                    largest: 1500,
                    reserved: 0,
                };
                (addr(*n), heard)
            });
            let heard = links::heard_within(entries, now_ns, HEARD_WINDOW);
            let agent = &mut self.agents[i];
            if heard != agent.heard {
                let version = agent.known[i].0 + 1;
                agent.known[i] = (version, Arc::from(links::encode(&heard)));
                agent.heard = heard;
                agent.stale = true;
            }
        }
        // Gossip rounds.
        for i in 0..PEERS {
            let mut partners = Vec::new();
            if self.due(i, GOSSIP_MS) {
                for _ in 0..GOSSIP_FANOUT {
                    partners.push(self.rng.below(PEERS));
                }
            }
            if self.due(i, hello_ms) && !self.agents[i].heard.is_empty() {
                let heard: Vec<Ipv4Addr> = self.agents[i].heard.keys().copied().collect();
                let pick = heard[self.rng.below(heard.len())];
                partners.push(index_of(pick));
            }
            for p in partners {
                if p != i && self.links.up[i].contains(&p) {
                    self.exchange(i, p);
                }
            }
        }
        for agent in &mut self.agents {
            if agent.stale {
                for (j, (version, value)) in agent.known.iter().enumerate() {
                    if addr(j) != agent.me && agent.applied[j] != *version {
                        agent.topology.update(addr(j), Some(value));
                        agent.applied[j] = *version;
                    }
                }
                let heard: BTreeSet<Ipv4Addr> = agent.heard.keys().copied().collect();
                agent.routes = agent.topology.routes(agent.me, &heard, &self.live);
                agent.stale = false;
            }
        }
    }

    /// Push-pull: each side takes the other's newer versions.
    fn exchange(&mut self, a: usize, b: usize) {
        for j in 0..PEERS {
            let (va, vb) = (self.agents[a].known[j].0, self.agents[b].known[j].0);
            if va > vb {
                self.agents[b].known[j] = self.agents[a].known[j].clone();
                self.agents[b].stale = true;
            } else if vb > va {
                self.agents[a].known[j] = self.agents[b].known[j].clone();
                self.agents[a].stale = true;
            }
        }
    }

    /// The routes every agent should have: the shortest paths over the true links.
    fn truth(&self) -> Vec<BTreeMap<Ipv4Addr, Path>> {
        let mut topology = Topology::default();
        let hears = |i: usize| -> BTreeMap<Ipv4Addr, u16> {
            self.links.up[i].iter().map(|&n| (addr(n), 1500)).collect()
        };
        for i in 0..PEERS {
            topology.update(addr(i), Some(&links::encode(&hears(i))));
        }
        (0..PEERS)
            .map(|i| {
                let heard: BTreeSet<Ipv4Addr> = hears(i).into_keys().collect();
                topology.routes(addr(i), &heard, &self.live)
            })
            .collect()
    }

    /// Runs until every agent's routes are `truth` (or `limit` passes); the simulated time
    /// that took.
    fn converge(&mut self, truth: &[BTreeMap<Ipv4Addr, Path>], limit: Duration) -> Duration {
        let start = self.now;
        while !self.agents.iter().zip(truth).all(|(a, t)| a.routes == *t) {
            assert!(
                self.now - start <= limit.as_millis() as u64,
                "not converged {limit:?} after the change: {} of {PEERS} agents still wrong",
                self.agents
                    .iter()
                    .zip(truth)
                    .filter(|(a, t)| a.routes != **t)
                    .count()
            );
            self.step();
        }
        Duration::from_millis(self.now - start)
    }
}

fn index_of(ip: Ipv4Addr) -> usize {
    let o = ip.octets();
    usize::from(o[2]) * 250 + usize::from(o[3]) - 1
}

/// Heap bytes one agent holds for a full mesh of `n` peers (each hearing all the others):
/// the published values as gossip keeps them (a copy each), its parsed topology and routes.
fn full_mesh_view_bytes(n: usize) -> isize {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let everyone: BTreeSet<Ipv4Addr> = (0..n).map(addr).collect();
    let values: Vec<String> = (0..n)
        .map(|i| {
            let others: BTreeMap<Ipv4Addr, u16> = everyone
                .iter()
                .filter(|p| **p != addr(i))
                .map(|p| (*p, 1500))
                .collect();
            links::encode(&others)
        })
        .collect();
    let mut topology = Topology::default();
    for (i, value) in values.iter().enumerate().skip(1) {
        topology.update(addr(i), Some(value));
    }
    let mut heard = everyone.clone();
    heard.remove(&addr(0));
    let routes = topology.routes(addr(0), &heard, &everyone);
    assert_eq!(routes.len(), n - 1);
    assert!(routes.values().all(|p| p.route == Route::Direct));
    drop(heard);
    drop(everyone);
    let held = LIVE_BYTES.load(Ordering::Relaxed) - before;
    drop((values, topology, routes));
    held
}

#[test]
fn five_hundred_peers_converge_within_5_s_of_a_link_change_in_under_10_mb_each() {
    let bytes = full_mesh_view_bytes(PEERS);
    eprintln!(
        "one agent's view of a full mesh of {PEERS}: {:.1} MB",
        bytes as f64 / 1e6
    );
    assert!(bytes < 10_000_000, "{bytes} bytes for one agent's view");

    let mut sim = Sim::new();
    let truth = sim.truth();
    let start = sim.converge(&truth, Duration::from_secs(30));
    eprintln!("{PEERS} peers from cold: routes correct after {start:?} (simulated)");
    let cross = truth[PER_SITE + 5][&addr(5)].route;
    assert!(
        matches!(cross, Route::Via(_)),
        "cross-site traffic should be relayed: {cross:?}"
    );

    // A backbone link between two gateways goes down, then comes back.
    let (g1, g2) = (0, PER_SITE);
    for up in [false, true] {
        sim.links.set(g1, g2, up);
        let truth = sim.truth();
        let took = sim.converge(&truth, Duration::from_secs(5));
        eprintln!(
            "backbone link {} - {} {}: routes correct after {took:?} (simulated)",
            addr(g1),
            addr(g2),
            if up { "up" } else { "down" }
        );
    }
    // A gateway dies: all its links go.
    let gone = 2 * PER_SITE + 1;
    let neighbours: Vec<usize> = sim.links.up[gone].iter().copied().collect();
    for n in neighbours {
        sim.links.set(gone, n, false);
    }
    sim.live.remove(&addr(gone));
    // Gossip's failure detector tells everyone (modelled as at once; chitchat takes about
    // 1.6 s, during which frames to the dead gateway are lost anyway).
    for agent in &mut sim.agents {
        agent.stale = true;
    }
    let truth = sim.truth();
    let took = sim.converge(&truth, Duration::from_secs(5));
    eprintln!(
        "gateway {} gone: routes correct after {took:?} (simulated)",
        addr(gone)
    );

    let mut topology_bytes = 0;
    for agent in &sim.agents {
        topology_bytes = topology_bytes.max(agent.topology.heap_bytes());
    }
    eprintln!(
        "largest parsed topology in the site mesh: {:.2} MB",
        topology_bytes as f64 / 1e6
    );
}
