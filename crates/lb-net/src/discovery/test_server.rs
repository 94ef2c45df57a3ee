//! [`TestDnsServer`]: a small authoritative DNS server on a loopback UDP port whose answers a
//! test sets and changes (A, AAAA and SRV records with their TTLs), and which can be told to
//! fail (SERVFAIL), to answer with nothing, or to stop answering. Built from the resolver's
//! own message types, so it costs no server crate.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// How a [`TestDnsServer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsBehavior {
    /// With the records set ([`TestDnsServer::set_addresses`], [`TestDnsServer::set_srv`]);
    /// NXDOMAIN for a name it has none for.
    #[default]
    Answer,
    /// SERVFAIL to every query.
    ServerFailure,
    /// NOERROR with no record, to every query.
    Empty,
    /// Not at all: queries time out.
    Silent,
    /// Holds every query until queries for this many different names have come, then
    /// answers them all and behaves as [`DnsBehavior::Answer`]: lookups made one after the
    /// other (each waiting for its answer) time out, lookups made together are answered.
    AnswerOnceAskedFor(usize),
}

/// One SRV record as [`TestDnsServer::set_srv`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is preferred: only the lowest value's records are primaries.
    pub priority: u16,
    /// Relative share among records of one priority.
    pub weight: u16,
    /// The port the service listens on.
    pub port: u16,
    /// The host name, whose A/AAAA records the server sends along when it has them.
    pub target: String,
}

#[derive(Debug, Default)]
struct Zone {
    /// Addresses by lower-case name without the final dot, with their TTL.
    addresses: HashMap<String, (Vec<IpAddr>, u32)>,
    srv: HashMap<String, (Vec<SrvRecord>, u32)>,
    behavior: DnsBehavior,
}

/// A DNS server on `127.0.0.1:0` (UDP) for tests; stops when dropped.
#[derive(Debug)]
pub struct TestDnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn lock(zone: &Mutex<Zone>) -> std::sync::MutexGuard<'_, Zone> {
    zone.lock().unwrap_or_else(|p| p.into_inner())
}

impl TestDnsServer {
    /// Starts one, with no records, on the current runtime.
    pub async fn start() -> io::Result<TestDnsServer> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let zone = Arc::new(Mutex::new(Zone::default()));
        let queries = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(socket, Arc::clone(&zone), Arc::clone(&queries)));
        Ok(TestDnsServer { addr, zone, queries, task })
    }

    /// Where it answers: give this as the resolver.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the A and AAAA records of `name` (replacing what it had), each with `ttl` seconds;
    /// no address removes the name.
    pub fn set_addresses(&self, name: &str, addresses: &[IpAddr], ttl: u32) {
        let mut zone = lock(&self.zone);
        if addresses.is_empty() {
            zone.addresses.remove(&key(name));
        } else {
            zone.addresses.insert(key(name), (addresses.to_vec(), ttl));
        }
    }

    /// Sets the SRV records of `name` (replacing what it had), each with `ttl` seconds; none
    /// removes the name.
    pub fn set_srv(&self, name: &str, records: &[SrvRecord], ttl: u32) {
        let mut zone = lock(&self.zone);
        if records.is_empty() {
            zone.srv.remove(&key(name));
        } else {
            zone.srv.insert(key(name), (records.to_vec(), ttl));
        }
    }

    /// Changes how it answers from the next query on.
    pub fn set_behavior(&self, behavior: DnsBehavior) {
        lock(&self.zone).behavior = behavior;
    }

    /// Queries received so far (answered or not).
    pub fn queries(&self) -> u64 {
        self.queries.load(Relaxed)
    }
}

impl Drop for TestDnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, zone: Arc<Mutex<Zone>>, queries: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 4096];
    // Queries held by `AnswerOnceAskedFor`, and the names they asked for.
    let mut held = Vec::new();
    let mut names = std::collections::HashSet::new();
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else { continue };
        queries.fetch_add(1, Relaxed);
        let Ok(request) = Message::from_vec(&buf[..len]) else { continue };
        let wanted = lock(&zone).behavior;
        if let DnsBehavior::AnswerOnceAskedFor(n) = wanted {
            names.extend(request.queries.iter().map(|q| key(&q.name().to_ascii())));
            held.push((request, peer));
            if names.len() < n {
                continue;
            }
            lock(&zone).behavior = DnsBehavior::Answer;
        } else {
            held.push((request, peer));
        }
        for (request, peer) in held.drain(..) {
            let Some(response) = answer(&request, &lock(&zone)) else { continue };
            if let Ok(bytes) = response.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    }
}

/// The response to `request`, or `None` to stay silent.
fn answer(request: &Message, zone: &Zone) -> Option<Message> {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(request.queries.iter().cloned());
    match zone.behavior {
        DnsBehavior::Silent => return None,
        DnsBehavior::ServerFailure => {
            response.metadata.response_code = ResponseCode::ServFail;
            return Some(response);
        }
        DnsBehavior::Empty => return Some(response),
        DnsBehavior::Answer | DnsBehavior::AnswerOnceAskedFor(_) => {}
    }
    let mut known = false;
    for query in &request.queries {
        let name = query.name().clone();
        let wanted = key(&name.to_ascii());
        match query.query_type() {
            RecordType::A | RecordType::AAAA => {
                if let Some((ips, ttl)) = zone.addresses.get(&wanted) {
                    known = true;
                    let v4 = query.query_type() == RecordType::A;
                    response.add_answers(records(&name, ips, *ttl, v4));
                }
                known |= zone.srv.contains_key(&wanted);
            }
            RecordType::SRV => {
                if let Some((list, ttl)) = zone.srv.get(&wanted) {
                    known = true;
                    for r in list {
                        let Ok(target) = Name::from_ascii(&r.target) else { continue };
                        let srv = SRV::new(r.priority, r.weight, r.port, target.clone());
                        response.add_answer(Record::from_rdata(
                            name.clone(),
                            *ttl,
                            RData::SRV(srv),
                        ));
                        if let Some((ips, ttl)) = zone.addresses.get(&key(&r.target)) {
                            response.add_additionals(records(&target, ips, *ttl, true));
                            response.add_additionals(records(&target, ips, *ttl, false));
                        }
                    }
                }
                known |= zone.addresses.contains_key(&wanted);
            }
            _ => known |= zone.addresses.contains_key(&wanted) || zone.srv.contains_key(&wanted),
        }
    }
    if !known {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    Some(response)
}

/// The A (`v4`) or AAAA records of `name` among `ips`.
fn records(name: &Name, ips: &[IpAddr], ttl: u32, v4: bool) -> Vec<Record> {
    ips.iter()
        .filter_map(|ip| match (ip, v4) {
            (IpAddr::V4(ip), true) => Some(RData::A(A(*ip))),
            (IpAddr::V6(ip), false) => Some(RData::AAAA(AAAA(*ip))),
            _ => None,
        })
        .map(|data| Record::from_rdata(name.clone(), ttl, data))
        .collect()
}
