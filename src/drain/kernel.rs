//! The drain's kernel half, loaded with the aya crate: the tc programs of
//! src/drain/bpf/drain.bpf.c (built by build.rs) on each interface that needs them, and their
//! maps — the flows passed through to an old holder, the VIPs whose ARP is guarded, counters.
//!
//! On kernels 6.6 and later the programs are attached as tcx links, which the kernel detaches
//! when the process holding them exits, however it exits. On older kernels they are netlink tc
//! filters, which outlive a killed process: attaching first removes any left by an earlier one.

#[cfg(nginx_ha_bpf)]
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use thiserror::Error;

use super::protocol::Flow;

#[derive(Debug, Clone, Error)]
pub enum KernelError {
    #[error(
        "this nginx-ha was built without the drain's BPF program (no clang at build time): drains are off; install clang and rebuild, or set drain_ms = 0"
    )]
    NotBuilt,
    #[error("cannot load the drain's BPF program: {0} (it needs CAP_BPF and CAP_NET_ADMIN, and a kernel with tc BPF)")]
    Load(String),
    #[error("cannot attach the drain's BPF program {program} to {interface}: {error}")]
    Attach { program: &'static str, interface: String, error: String },
    #[error("cannot update the drain's BPF map {map}: {error}")]
    Map { map: &'static str, error: String },
}

/// The two ends of a flow as the program keys them (src/drain/bpf/drain.bpf.c, struct flow_key).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct FlowKey {
    family: u8,
    pad: [u8; 3],
    client_port: [u8; 2],
    vip_port: [u8; 2],
    client: [u8; 16],
    vip: [u8; 16],
}

/// Where a flow's packets go (struct flow_dest).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct FlowDest {
    old_holder_mac: [u8; 6],
    own_mac: [u8; 6],
}

#[cfg(nginx_ha_bpf)]
// SAFETY: plain C layouts of byte arrays, no padding the kernel could read uninitialised.
unsafe impl aya::Pod for FlowKey {}
#[cfg(nginx_ha_bpf)]
// SAFETY: as FlowKey.
unsafe impl aya::Pod for FlowDest {}

fn address_bytes(address: IpAddr) -> [u8; 16] {
    let mut bytes = [0; 16];
    match address {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes = v6.octets(),
    }
    bytes
}

impl FlowKey {
    pub fn of(flow: &Flow) -> FlowKey {
        FlowKey {
            family: if flow.vip.is_ipv4() { 4 } else { 6 },
            pad: [0; 3],
            client_port: flow.client.port().to_be_bytes(),
            vip_port: flow.vip.port().to_be_bytes(),
            client: address_bytes(flow.client.ip()),
            vip: address_bytes(flow.vip.ip()),
        }
    }
}

/// The program's counters (drain_stats), summed over the CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub forwarded_packets: u64,
    pub arp_dropped: u64,
    pub arp_rewritten: u64,
    pub reused_tuples: u64,
    /// New connections to a guarded VIP left to the client's retransmission (old holder).
    pub syns_deferred: u64,
}

#[cfg(nginx_ha_bpf)]
const INGRESS: &str = "drain_ingress";
#[cfg(nginx_ha_bpf)]
const EGRESS: &str = "drain_egress";

pub struct Kernel {
    #[cfg(nginx_ha_bpf)]
    ebpf: aya::Ebpf,
    /// Interfaces with both programs attached, by index, and their names.
    #[cfg(nginx_ha_bpf)]
    attached: HashMap<u32, String>,
    /// The links of each attached interface: detached (their fds closed) when the interface is
    /// attached again under another index (it was deleted and created again), else every
    /// re-creation kept two dead links open (the fault storm saw +2 fds per re-creation).
    #[cfg(nginx_ha_bpf)]
    links: HashMap<u32, Vec<(&'static str, aya::programs::tc::SchedClassifierLinkId)>>,
}

#[cfg(nginx_ha_bpf)]
impl Kernel {
    pub fn load() -> Result<Kernel, KernelError> {
        use aya::programs::SchedClassifier;
        // Without the kernel's BTF: the programs need no CO-RE relocation. aya's loader parses
        // /sys/kernel/btf/vmlinux all the same when it is made; that took ~15 MiB of heap, which
        // glibc kept after it was freed (the daemon's idle RSS went from 7 to 22 MiB): handed
        // back below.
        let loaded = aya::EbpfLoader::new()
            .btf(None)
            .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drain.bpf.o")));
        // SAFETY: malloc_trim only returns free heap memory to the kernel.
        unsafe { libc::malloc_trim(0) };
        let mut ebpf = loaded.map_err(|e| KernelError::Load(e.to_string()))?;
        for name in [INGRESS, EGRESS] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| KernelError::Load(format!("no program {name}")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| KernelError::Load(e.to_string()))?;
            program.load().map_err(|e| KernelError::Load(format!("{name}: {e}")))?;
        }
        Ok(Kernel { ebpf, attached: HashMap::new(), links: HashMap::new() })
    }

    /// Attaches both programs to `interface` unless they are already.
    pub fn attach(&mut self, ifindex: u32, interface: &str) -> Result<(), KernelError> {
        use aya::programs::SchedClassifier;
        use aya::programs::tc::{self, TcAttachType};
        if self.attached.get(&ifindex).is_some_and(|name| name == interface) {
            return Ok(());
        }
        // The same interface under an older index (deleted and created again), or this index
        // under an older name: its links are dead, or about to be replaced.
        let stale: Vec<u32> =
            self.attached.iter().filter(|(i, name)| **i == ifindex || *name == interface).map(|(i, _)| *i).collect();
        for index in stale {
            self.attached.remove(&index);
            for (name, link) in self.links.remove(&index).unwrap_or_default() {
                let program: &mut SchedClassifier =
                    self.ebpf.program_mut(name).expect("loaded").try_into().expect("a classifier");
                // Already detached by the kernel with its interface: only the fd is closed.
                let _ = program.detach(link);
            }
        }
        let mut links = Vec::with_capacity(2);
        for (name, kind) in [(INGRESS, TcAttachType::Ingress), (EGRESS, TcAttachType::Egress)] {
            // Filters a killed nginx-ha left (kernels before 6.6); none is the usual case.
            let _ = tc::qdisc_detach_program(interface, kind, name);
            let program: &mut SchedClassifier =
                self.ebpf.program_mut(name).expect("loaded").try_into().expect("a classifier");
            let attach_error =
                |error: String| KernelError::Attach { program: name, interface: interface.into(), error };
            let link = match program.attach(interface, kind) {
                Ok(link) => link,
                Err(first) => {
                    // The netlink way needs the clsact qdisc; tcx does not.
                    tc::qdisc_add_clsact(interface)
                        .map_err(|e| attach_error(format!("{first}; adding clsact: {e}")))?;
                    program.attach(interface, kind).map_err(|e| attach_error(e.to_string()))?
                }
            };
            links.push((name, link));
        }
        self.attached.insert(ifindex, interface.into());
        self.links.insert(ifindex, links);
        Ok(())
    }

    fn flows(&mut self) -> aya::maps::HashMap<&mut aya::maps::MapData, FlowKey, FlowDest> {
        aya::maps::HashMap::try_from(self.ebpf.map_mut("drain_flows").expect("in the object")).expect("a hash map")
    }

    fn arp_guard(&mut self) -> aya::maps::HashMap<&mut aya::maps::MapData, [u8; 4], [u8; 4]> {
        aya::maps::HashMap::try_from(self.ebpf.map_mut("arp_guard").expect("in the object")).expect("a hash map")
    }

    pub fn forward(&mut self, flows: &[Flow], old_holder_mac: [u8; 6], own_mac: [u8; 6]) -> Result<(), KernelError> {
        let dest = FlowDest { old_holder_mac, own_mac };
        let mut map = self.flows();
        for flow in flows {
            map.insert(FlowKey::of(flow), dest, 0)
                .map_err(|e| KernelError::Map { map: "drain_flows", error: e.to_string() })?;
        }
        Ok(())
    }

    pub fn stop_forwarding(&mut self, flows: &[Flow]) {
        let mut map = self.flows();
        for flow in flows {
            // Absent already (the client reused the tuple for a new connection) is fine.
            let _ = map.remove(&FlowKey::of(flow));
        }
    }

    /// The old holder no longer answers ARP for `vip`, and its own ARP packets speak from `own`
    /// instead (none: they are dropped).
    pub fn guard_arp(&mut self, vip: Ipv4Addr, own: Option<Ipv4Addr>) -> Result<(), KernelError> {
        let own = own.map_or([0; 4], |own| own.octets());
        self.arp_guard()
            .insert(vip.octets(), own, 0)
            .map_err(|e| KernelError::Map { map: "arp_guard", error: e.to_string() })
    }

    pub fn unguard_arp(&mut self, vip: Ipv4Addr) {
        let _ = self.arp_guard().remove(&vip.octets());
    }

    pub fn counters(&self) -> Counters {
        let Some(map) = self.ebpf.map("drain_stats") else { return Counters::default() };
        let Ok(stats) = aya::maps::PerCpuArray::<_, u64>::try_from(map) else { return Counters::default() };
        let sum = |index: u32| stats.get(&index, 0).map(|values| values.iter().sum()).unwrap_or(0);
        Counters {
            forwarded_packets: sum(0),
            arp_dropped: sum(1),
            arp_rewritten: sum(2),
            reused_tuples: sum(3),
            syns_deferred: sum(4),
        }
    }
}

#[cfg(not(nginx_ha_bpf))]
impl Kernel {
    pub fn load() -> Result<Kernel, KernelError> {
        Err(KernelError::NotBuilt)
    }
    pub fn attach(&mut self, _ifindex: u32, _interface: &str) -> Result<(), KernelError> {
        Err(KernelError::NotBuilt)
    }
    pub fn forward(&mut self, _flows: &[Flow], _mac: [u8; 6], _own: [u8; 6]) -> Result<(), KernelError> {
        Err(KernelError::NotBuilt)
    }
    pub fn stop_forwarding(&mut self, _flows: &[Flow]) {}
    pub fn guard_arp(&mut self, _vip: Ipv4Addr, _own: Option<Ipv4Addr>) -> Result<(), KernelError> {
        Err(KernelError::NotBuilt)
    }
    pub fn unguard_arp(&mut self, _vip: Ipv4Addr) {}
    pub fn counters(&self) -> Counters {
        Counters::default()
    }
}
