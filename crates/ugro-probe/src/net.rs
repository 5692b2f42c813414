//! Network collectors: interfaces and InfiniBand ports from sysfs, TCP reachability of peers.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use ugro_types::{IbPort, Interface, NetworkSection, Peer};

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

/// Non-loopback interfaces under `sys_net` (`/sys/class/net`).
pub fn interfaces(sys_net: &Path) -> std::io::Result<Vec<Interface>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(sys_net)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let dir = e.path();
        let oper_state = read_trim(&dir.join("operstate")).unwrap_or_else(|| "unknown".into());
        // Both read with EINVAL while the link is down; that is "unknown", not 0.
        let carrier = read_trim(&dir.join("carrier")).and_then(|c| match c.as_str() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        });
        let speed_mbps = read_trim(&dir.join("speed"))
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0);
        out.push(Interface {
            name,
            oper_state,
            carrier,
            speed_mbps,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `4: ACTIVE` → `ACTIVE`.
fn after_colon(s: &str) -> String {
    s.split_once(':').map_or(s, |(_, r)| r).trim().to_owned()
}

/// `400 Gb/sec (4X NDR)` → 400.
pub fn parse_rate(s: &str) -> Option<f64> {
    s.split_whitespace().next()?.parse().ok()
}

/// InfiniBand ports under `sys_ib` (`/sys/class/infiniband`); none when the directory does
/// not exist.
pub fn infiniband(sys_ib: &Path) -> std::io::Result<Vec<IbPort>> {
    let mut out = Vec::new();
    let devs = match std::fs::read_dir(sys_ib) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for d in devs {
        let d = d?;
        let device = d.file_name().to_string_lossy().into_owned();
        let Ok(ports) = std::fs::read_dir(d.path().join("ports")) else {
            continue;
        };
        for p in ports.flatten() {
            let Ok(port) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let dir = p.path();
            out.push(IbPort {
                device: device.clone(),
                port,
                state: read_trim(&dir.join("state"))
                    .map_or_else(|| "unknown".into(), |s| after_colon(&s)),
                phys_state: read_trim(&dir.join("phys_state"))
                    .map_or_else(|| "unknown".into(), |s| after_colon(&s)),
                rate_gbps: read_trim(&dir.join("rate")).and_then(|r| parse_rate(&r)),
            });
        }
    }
    out.sort_by(|a, b| (&a.device, a.port).cmp(&(&b.device, b.port)));
    Ok(out)
}

/// TCP connect to one `host:port` within `timeout`.
pub fn probe_peer(target: &str, timeout: Duration) -> Peer {
    let fail = |error: String| Peer {
        target: target.to_owned(),
        reachable: false,
        latency_ms: None,
        error: Some(error),
    };
    let addrs = match target.to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return fail(format!("resolve: {e}")),
    };
    let Some(addr) = addrs.first() else {
        return fail("resolve: no address".into());
    };
    let start = Instant::now();
    match TcpStream::connect_timeout(addr, timeout) {
        Ok(_) => Peer {
            target: target.to_owned(),
            reachable: true,
            latency_ms: Some((start.elapsed().as_secs_f64() * 1e6).round() / 1e3),
            error: None,
        },
        Err(e) => fail(e.to_string()),
    }
}

/// The network section. Peers are probed in parallel so N slow peers cost one timeout.
pub fn collect(sys: &Path, peers: &[String], timeout: Duration) -> NetworkSection {
    let mut sec = NetworkSection::default();
    match interfaces(&sys.join("class/net")) {
        Ok(i) => sec.interfaces = i,
        Err(e) => {
            sec.absent.insert("interfaces".into(), e.to_string());
        }
    }
    match infiniband(&sys.join("class/infiniband")) {
        Ok(i) => sec.infiniband = i,
        Err(e) => {
            sec.absent.insert("infiniband".into(), e.to_string());
        }
    }
    sec.peers = std::thread::scope(|s| {
        let hs: Vec<_> = peers
            .iter()
            .map(|p| s.spawn(move || probe_peer(p, timeout)))
            .collect();
        hs.into_iter()
            .zip(peers)
            .map(|(h, p)| {
                h.join().unwrap_or_else(|_| Peer {
                    target: p.clone(),
                    reachable: false,
                    latency_ms: None,
                    error: Some("probe thread panicked".into()),
                })
            })
            .collect()
    });
    sec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ib_sysfs_values_are_decoded() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("mlx5_0/ports/1");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("state"), "4: ACTIVE\n").unwrap();
        std::fs::write(p.join("phys_state"), "5: LinkUp\n").unwrap();
        std::fs::write(p.join("rate"), "400 Gb/sec (4X NDR)\n").unwrap();
        let ports = infiniband(d.path()).unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].state, "ACTIVE");
        assert_eq!(ports[0].phys_state, "LinkUp");
        assert_eq!(ports[0].rate_gbps, Some(400.0));
        assert!(infiniband(&d.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn down_links_have_no_speed_rather_than_zero() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("eth9");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("operstate"), "down\n").unwrap();
        std::fs::write(p.join("speed"), "-1\n").unwrap();
        let i = interfaces(d.path()).unwrap();
        assert_eq!(i[0].oper_state, "down");
        assert_eq!(i[0].speed_mbps, None);
        assert_eq!(i[0].carrier, None);
    }

    #[test]
    fn peers_report_latency_or_the_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let p = probe_peer(&addr, Duration::from_secs(1));
        assert!(p.reachable, "{p:?}");
        assert!(p.latency_ms.is_some());
        drop(l);
        let p = probe_peer(&addr, Duration::from_secs(1));
        assert!(!p.reachable);
        assert!(p.error.is_some());
    }
}
