//! The soak's network: one bridge in the root namespace (ZooKeeper and the clients live there)
//! and one network namespace per broker, joined to the bridge by a veth pair, each broker on its
//! own address. A broker is cut off by /32 blackhole routes on both sides (in its namespace for
//! every peer and the bridge address, in every other namespace and the root namespace for its
//! address) and healed by deleting them. No netem, qdisc or firewall is needed: this kernel
//! has none of them.
//!
//! Names carry the soak's pid (bridge `sl<pid>br`, veth pair `sl<pid>v<id>`/`sl<pid>p<id>`,
//! namespace `sl<pid>b<id>`), so runs never
//! collide; [`Net`]'s `Drop` removes everything it made (also when the soak panics or is
//! interrupted), and [`sweep_leftovers`] removes what runs that died without it left behind.
//! All addresses are in `10.213.0.0/16`, one /24 per run.

use std::process::Command;

/// The /16 every soak network lives in; the third octet is the run's.
const NET_PREFIX: &str = "10.213";

/// Runs `ip` with `args`; `Err` with its stderr when it fails.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether a process with this pid exists.
fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a soak name `sl<pid><suffix>`, if `name` is one.
fn soak_pid(name: &str) -> Option<u32> {
    let digits: String = name
        .strip_prefix("sl")?
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let rest = &name[2 + digits.len()..];
    let is_soak = rest == "br"
        || rest
            .strip_prefix('v')
            .or_else(|| rest.strip_prefix('b'))
            .or_else(|| rest.strip_prefix('p'))
            .is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()));
    if is_soak {
        digits.parse().ok()
    } else {
        None
    }
}

/// Removes namespaces, links and root-namespace blackhole routes left by soak runs whose
/// process is gone (killed before their `Drop` ran). Returns what it removed.
pub fn sweep_leftovers() -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(list) = ip(&["netns", "list"]) {
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if soak_pid(name).is_none_or(pid_alive) {
                continue;
            }
            // Brokers of the dead run still in the namespace: kill them first.
            for pid in ip(&["netns", "pids", name]).unwrap_or_default().lines() {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: a signal to a process of a dead soak run's namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    removed.push(format!("process {pid}"));
                }
            }
            if ip(&["netns", "del", name]).is_ok() {
                removed.push(format!("netns {name}"));
            }
        }
    }
    if let Ok(list) = ip(&["-o", "link", "show"]) {
        for line in list.lines() {
            // "12: sl123br: <...>" or "13: sl123v1@if2: <...>"
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            if soak_pid(name).is_some_and(|pid| !pid_alive(pid))
                && ip(&["link", "del", name]).is_ok()
            {
                removed.push(format!("link {name}"));
            }
        }
    }
    // Blackhole routes outlive their bridge. A soak subnet with no bridge address left belongs
    // to no living run.
    let live_subnets: Vec<String> = ip(&["-o", "-4", "addr", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let addr = l.split_whitespace().nth(3)?;
            addr.starts_with(&format!("{NET_PREFIX}."))
                .then(|| subnet_of(addr.split('/').next().unwrap_or("")))
        })
        .collect();
    // A ZooKeeper of a soak run that was killed (-9) outlives it (the brokers do not: they get
    // a parent-death signal): one listening in a soak subnet that is gone is an orphan.
    for (pid, addr) in zookeepers() {
        if addr.starts_with(&format!("{NET_PREFIX}.")) && !live_subnets.contains(&subnet_of(&addr))
        {
            // SAFETY: a signal to an orphaned ZooKeeper of a dead soak run.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            removed.push(format!("ZooKeeper {pid} on {addr}"));
        }
    }
    if let Ok(list) = ip(&["route", "show", "type", "blackhole"]) {
        for line in list.lines() {
            let Some(dst) = line.split_whitespace().nth(1) else {
                continue;
            };
            let addr = dst.split('/').next().unwrap_or("");
            if addr.starts_with(&format!("{NET_PREFIX}."))
                && !live_subnets.contains(&subnet_of(addr))
                && ip(&["route", "del", "blackhole", dst]).is_ok()
            {
                removed.push(format!("route blackhole {dst}"));
            }
        }
    }
    removed
}

/// Running ZooKeeper servers started like the test harness starts them: `(pid,
/// clientPortAddress)` read from the `zoo.cfg` named on their command line.
fn zookeepers() -> Vec<(i32, String)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if !args.iter().any(|a| a.ends_with("QuorumPeerMain")) {
                return None;
            }
            let cfg =
                std::fs::read_to_string(args.iter().find(|a| a.ends_with("zoo.cfg"))?).ok()?;
            let addr = cfg
                .lines()
                .find_map(|l| l.strip_prefix("clientPortAddress="))?;
            Some((pid, addr.trim().to_string()))
        })
        .collect()
}

/// `a.b.c` of an address `a.b.c.d`.
fn subnet_of(addr: &str) -> String {
    addr.rsplit_once('.')
        .map(|(s, _)| s.to_string())
        .unwrap_or_default()
}

/// A blackhole route: in a namespace (`None` = root) for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    netns: Option<String>,
    addr: String,
}

/// The soak's bridge and broker namespaces. Dropping it removes them and every route it added.
#[derive(Debug)]
pub struct Net {
    bridge: String,
    subnet: String,
    /// Broker id -> namespace name.
    namespaces: Vec<(i32, String)>,
    blackholes: Vec<Route>,
}

impl Net {
    /// Creates the bridge and one namespace per broker id. Needs root.
    pub fn create(broker_ids: &[i32]) -> Result<Net, String> {
        let pid = std::process::id();
        let subnet = format!("{NET_PREFIX}.{}", pid % 250 + 1);
        let mut net = Net {
            bridge: format!("sl{pid}br"),
            subnet,
            namespaces: Vec::new(),
            blackholes: Vec::new(),
        };
        let host = net.host_addr();
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{host}/24"), "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for &id in broker_ids {
            let ns = format!("sl{pid}b{id}");
            let veth = format!("sl{pid}v{id}");
            let peer = format!("sl{pid}p{id}");
            ip(&["netns", "add", &ns])?;
            net.namespaces.push((id, ns.clone()));
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["link", "set", &veth, "master", &net.bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"])?;
            let addr = format!("{}/24", net.broker_addr(id));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The bridge's address in the root namespace: ZooKeeper listens here.
    pub fn host_addr(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// Broker `id`'s address inside its namespace.
    pub fn broker_addr(&self, id: i32) -> String {
        format!("{}.{}", self.subnet, 10 + id)
    }

    /// Broker `id`'s namespace name.
    pub fn netns(&self, id: i32) -> &str {
        self.namespaces
            .iter()
            .find(|(b, _)| *b == id)
            .map(|(_, ns)| ns.as_str())
            .unwrap_or_else(|| panic!("no namespace for broker {id}"))
    }

    fn add_blackhole(&mut self, netns: Option<&str>, addr: &str) -> Result<(), String> {
        let dst = format!("{addr}/32");
        match netns {
            Some(ns) => ip(&["-n", ns, "route", "add", "blackhole", &dst])?,
            None => ip(&["route", "add", "blackhole", &dst])?,
        };
        self.blackholes.push(Route {
            netns: netns.map(str::to_string),
            addr: addr.to_string(),
        });
        Ok(())
    }

    /// Cuts broker `id` off from ZooKeeper, the clients and the other brokers.
    pub fn isolate(&mut self, id: i32) -> Result<(), String> {
        let own_ns = self.netns(id).to_string();
        let own_addr = self.broker_addr(id);
        let others: Vec<(i32, String)> = self
            .namespaces
            .iter()
            .filter(|(b, _)| *b != id)
            .cloned()
            .collect();
        self.add_blackhole(Some(&own_ns), &self.host_addr())?;
        self.add_blackhole(None, &own_addr)?;
        for (other, ns) in others {
            self.add_blackhole(Some(&own_ns), &self.broker_addr(other))?;
            self.add_blackhole(Some(&ns), &own_addr)?;
        }
        Ok(())
    }

    /// Deletes every blackhole route: all brokers reach each other again.
    pub fn heal(&mut self) -> Result<(), String> {
        let mut first_error = None;
        for r in std::mem::take(&mut self.blackholes) {
            let dst = format!("{}/32", r.addr);
            let res = match &r.netns {
                Some(ns) => ip(&["-n", ns, "route", "del", "blackhole", &dst]),
                None => ip(&["route", "del", "blackhole", &dst]),
            };
            if let Err(e) = res {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The namespaces' own routes go with them; the root namespace's must be deleted.
        let _ = self.heal();
        for (_, ns) in &self.namespaces {
            // Deleting a namespace also deletes the veth end inside it, and with it the pair.
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soak_names_are_recognised() {
        assert_eq!(soak_pid("sl1234br"), Some(1234));
        assert_eq!(soak_pid("sl1234v2"), Some(1234));
        assert_eq!(soak_pid("sl1234b3"), Some(1234));
        assert_eq!(soak_pid("sl1234"), None);
        assert_eq!(soak_pid("slack"), None);
        assert_eq!(soak_pid("eth0"), None);
        assert_eq!(subnet_of("10.213.7.11"), "10.213.7");
    }
}
